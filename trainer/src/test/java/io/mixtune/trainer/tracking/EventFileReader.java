package io.mixtune.trainer.tracking;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * Reads event files for the tests, written apart from the writer: TFRecord frames with both CRCs checked, and a
 * generic protobuf wire-format decoder, the fields of an Event picked out by their numbers in event.proto.
 */
final class EventFileReader {
    private EventFileReader() {}

    /** An Event's fields this project writes; tag/value/text are those of its one summary value, if any. */
    record Event(double wallTime, long step, String fileVersion, Integer sessionStatus, String tag, Float simpleValue,
            String pluginName, Integer dtype, String text) {}

    static List<Event> read(Path file) throws IOException {
        List<Event> events = new ArrayList<>();
        for (byte[] data : frames(Files.readAllBytes(file))) {
            events.add(event(data));
        }
        return events;
    }

    static List<byte[]> frames(byte[] bytes) {
        ByteBuffer in = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        List<byte[]> frames = new ArrayList<>();
        while (in.hasRemaining()) {
            byte[] header = new byte[8];
            in.get(header);
            long length = ByteBuffer.wrap(header).order(ByteOrder.LITTLE_ENDIAN).getLong();
            assertEquals(masked(header), in.getInt(), "length CRC at byte " + (in.position() - 4));
            byte[] data = new byte[Math.toIntExact(length)];
            in.get(data);
            assertEquals(masked(data), in.getInt(), "data CRC at byte " + (in.position() - 4));
            frames.add(data);
        }
        return frames;
    }

    /** tensorflow/core/lib/hash/crc32c.h: Mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8. */
    static int masked(byte[] data) {
        CRC32C crc = new CRC32C();
        crc.update(data);
        long value = crc.getValue();
        return (int) ((((value >>> 15) | (value << 17)) & 0xFFFFFFFFL) + 0xa282ead8L);
    }

    static Event event(byte[] data) {
        Map<Integer, List<Object>> event = fields(data);
        String tag = null;
        Float simpleValue = null;
        String pluginName = null;
        Integer dtype = null;
        String text = null;
        if (event.containsKey(5)) {
            List<Object> values = fields((byte[]) one(event, 5)).get(1);
            assertEquals(1, values.size(), "one value per summary");
            Map<Integer, List<Object>> value = fields((byte[]) values.get(0));
            tag = string(value, 1);
            if (value.containsKey(2)) {
                simpleValue = Float.intBitsToFloat((int) (long) (Long) one(value, 2));
            }
            if (value.containsKey(9)) {
                pluginName = string(fields((byte[]) one(fields((byte[]) one(value, 9)), 1)), 1);
            }
            if (value.containsKey(8)) {
                Map<Integer, List<Object>> tensor = fields((byte[]) one(value, 8));
                dtype = (int) (long) (Long) one(tensor, 1);
                assertEquals(0, ((byte[]) one(tensor, 2)).length, "a scalar's shape has no dims");
                text = string(tensor, 8);
            }
        }
        Integer status = event.containsKey(7) ? (int) (long) (Long) one(fields((byte[]) one(event, 7)), 1) : null;
        return new Event(event.containsKey(1) ? Double.longBitsToDouble((Long) one(event, 1)) : 0,
                event.containsKey(2) ? (Long) one(event, 2) : 0, string(event, 3), status, tag, simpleValue,
                pluginName, dtype, text);
    }

    private static Object one(Map<Integer, List<Object>> message, int field) {
        List<Object> values = message.get(field);
        assertEquals(1, values.size(), "field " + field);
        return values.get(0);
    }

    private static String string(Map<Integer, List<Object>> message, int field) {
        return message.containsKey(field) ? new String((byte[]) one(message, field), StandardCharsets.UTF_8) : null;
    }

    /** Field number to its values: Long for varint, fixed64 and fixed32 (raw bits), byte[] for length-delimited. */
    static Map<Integer, List<Object>> fields(byte[] message) {
        Map<Integer, List<Object>> fields = new LinkedHashMap<>();
        ByteBuffer in = ByteBuffer.wrap(message).order(ByteOrder.LITTLE_ENDIAN);
        while (in.hasRemaining()) {
            long key = varint(in);
            int field = (int) (key >>> 3);
            Object value = switch ((int) (key & 7)) {
                case 0 -> varint(in);
                case 1 -> in.getLong();
                case 5 -> (long) in.getInt();
                case 2 -> {
                    byte[] bytes = new byte[(int) varint(in)];
                    in.get(bytes);
                    yield bytes;
                }
                default -> throw new AssertionError("wire type " + (key & 7) + " in " + HexFormat.of().formatHex(
                        message));
            };
            fields.computeIfAbsent(field, f -> new ArrayList<>()).add(value);
        }
        return fields;
    }

    private static long varint(ByteBuffer in) {
        long value = 0;
        for (int shift = 0; ; shift += 7) {
            byte b = in.get();
            value |= (long) (b & 0x7F) << shift;
            if (b >= 0) {
                return value;
            }
        }
    }
}
