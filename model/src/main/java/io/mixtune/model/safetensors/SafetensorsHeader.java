package io.mixtune.model.safetensors;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * The header of one safetensors file: an 8-byte little-endian length N, then N bytes of JSON mapping tensor names
 * to {@code {"dtype", "shape", "data_offsets"}} plus an optional {@code "__metadata__"} string map; the data buffer
 * follows at byte 8 + N. This class is the one place that knows the layout, for reading and for writing.
 */
record SafetensorsHeader(Path file, long dataStart, List<TensorInfo> tensors, Map<String, String> metadata) {

    static final String METADATA_KEY = "__metadata__";

    /** The reference implementation refuses headers above 100 MB; a larger length means a corrupt or foreign file. */
    static final long MAX_HEADER_BYTES = 100_000_000L;

    /** The reference writer pads the header with spaces so the data buffer starts 8-byte aligned. */
    static final int HEADER_ALIGNMENT = 8;

    private static final JsonMapper JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    SafetensorsHeader {
        tensors = List.copyOf(tensors);
        metadata = Map.copyOf(metadata);
    }

    /** Reads and validates the header of {@code file}; touches no tensor data. */
    static SafetensorsHeader read(Path file, FileChannel channel) throws IOException {
        long fileSize = channel.size();
        if (fileSize < 8) {
            throw new CheckpointException(file, "truncated: a safetensors file starts with an 8-byte header length,"
                    + " but the file is only " + fileSize + " bytes long");
        }
        ByteBuffer lengthBytes = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        readFully(channel, lengthBytes, 0);
        long headerLength = lengthBytes.getLong(0);
        if (headerLength < 0 || headerLength > fileSize - 8) {
            throw new CheckpointException(file, "header length " + Long.toUnsignedString(headerLength)
                    + " (the first 8 bytes, little-endian) runs past the end of the file: expected at most "
                    + (fileSize - 8) + " for a file of " + fileSize + " bytes (truncated file or not safetensors"
                    + pickleHint(lengthBytes) + ")");
        }
        if (headerLength > MAX_HEADER_BYTES) {
            throw new CheckpointException(file, "header length " + headerLength + " exceeds the " + MAX_HEADER_BYTES
                    + "-byte limit of the safetensors format (corrupt file?)");
        }
        ByteBuffer headerBytes = ByteBuffer.allocate((int) headerLength);
        readFully(channel, headerBytes, 8);
        JsonNode root = parseJson(file, headerBytes.array());
        long dataStart = 8 + headerLength;
        return fromJson(file, root, dataStart, fileSize - dataStart);
    }

    /** The header bytes (length prefix, JSON, space padding) of a file holding {@code specs} in order. */
    static byte[] encode(List<SafetensorsWriter.TensorSpec> specs, Map<String, String> metadata) {
        ObjectNode root = JSON.createObjectNode();
        ObjectNode meta = root.putObject(METADATA_KEY);
        metadata.forEach(meta::put);
        long offset = 0;
        for (SafetensorsWriter.TensorSpec spec : specs) {
            ObjectNode entry = root.putObject(spec.name());
            entry.put("dtype", spec.dtype().name());
            ArrayNode shape = entry.putArray("shape");
            for (long dim : spec.shape()) {
                shape.add(dim);
            }
            long end = offset + spec.byteLength();
            entry.putArray("data_offsets").add(offset).add(end);
            offset = end;
        }
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(root);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("could not serialise a safetensors header", e);
        }
        int padded = (json.length + HEADER_ALIGNMENT - 1) / HEADER_ALIGNMENT * HEADER_ALIGNMENT;
        ByteBuffer out = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(padded).put(json);
        while (out.hasRemaining()) {
            out.put((byte) ' ');
        }
        return out.array();
    }

    private static JsonNode parseJson(Path file, byte[] header) {
        try {
            JsonNode root = JSON.readTree(header);
            if (root == null || !root.isObject()) {
                throw new CheckpointException(file, "header is not a JSON object: expected {\"tensor name\": {...}},"
                        + " found " + (root == null || root.isMissingNode() ? "nothing" : root.getNodeType()));
            }
            return root;
        } catch (JsonProcessingException e) {
            JsonLocation where = e.getLocation();
            throw new CheckpointException(file, "header is not valid JSON: " + e.getOriginalMessage()
                    + (where == null ? "" : " (header line " + where.getLineNr() + ", column " + where.getColumnNr() + ")"));
        } catch (IOException e) {
            throw new CheckpointException(file, null, "could not parse the header: " + e.getMessage(), e);
        }
    }

    private static SafetensorsHeader fromJson(Path file, JsonNode root, long dataStart, long dataLength) {
        List<TensorInfo> tensors = new ArrayList<>();
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> field : root.properties()) {
            if (field.getKey().equals(METADATA_KEY)) {
                readMetadata(file, field.getValue(), metadata);
            } else {
                tensors.add(readEntry(file, field.getKey(), field.getValue(), dataStart, dataLength));
            }
        }
        requireNoOverlap(file, tensors, dataStart);
        return new SafetensorsHeader(file, dataStart, tensors, metadata);
    }

    private static void readMetadata(Path file, JsonNode node, Map<String, String> into) {
        if (!node.isObject()) {
            throw new CheckpointException(file, "\"" + METADATA_KEY + "\" must be a JSON object of strings, found "
                    + node.getNodeType());
        }
        node.properties().forEach(e -> {
            if (!e.getValue().isTextual()) {
                throw new CheckpointException(file, "\"" + METADATA_KEY + "\" value for key '" + e.getKey()
                        + "' must be a string, found " + e.getValue().getNodeType());
            }
            into.put(e.getKey(), e.getValue().textValue());
        });
    }

    private static TensorInfo readEntry(Path file, String name, JsonNode entry, long dataStart, long dataLength) {
        if (!entry.isObject()) {
            throw new CheckpointException(file, name, "header entry must be a JSON object with dtype, shape and"
                    + " data_offsets, found " + entry.getNodeType());
        }
        JsonNode dtypeNode = entry.get("dtype");
        if (dtypeNode == null || !dtypeNode.isTextual()) {
            throw new CheckpointException(file, name, "header entry must have \"dtype\" as a string, found "
                    + describe(dtypeNode));
        }
        DType dtype = DType.fromHeaderName(dtypeNode.textValue()).orElseThrow(() -> new CheckpointException(file,
                name, "unknown dtype \"" + dtypeNode.textValue() + "\": expected one of "
                + Arrays.toString(DType.values())));
        long[] shape = readNonNegativeLongs(file, name, entry, "shape", -1);
        long[] offsets = readNonNegativeLongs(file, name, entry, "data_offsets", 2);
        long begin = offsets[0];
        long end = offsets[1];
        if (begin > end) {
            throw new CheckpointException(file, name, "data_offsets [" + begin + ", " + end + "] begin after end:"
                    + " expected begin <= end");
        }
        if (end > dataLength) {
            throw new CheckpointException(file, name, "data_offsets [" + begin + ", " + end + "] run past the end"
                    + " of the data buffer: expected end <= " + dataLength + " (file size - 8 - header length;"
                    + " truncated file?)");
        }
        long expectedBytes;
        try {
            long numel = 1;
            for (long dim : shape) {
                numel = Math.multiplyExact(numel, dim);
            }
            expectedBytes = Math.multiplyExact(numel, (long) dtype.byteSize());
        } catch (ArithmeticException overflow) {
            throw new CheckpointException(file, name, "shape " + Arrays.toString(shape) + " of " + dtype
                    + " is too large to address: expected a byte size below 2^63");
        }
        if (end - begin != expectedBytes) {
            throw new CheckpointException(file, name, "data_offsets [" + begin + ", " + end + "] span "
                    + (end - begin) + " bytes, but shape " + Arrays.toString(shape) + " of " + dtype
                    + " needs " + expectedBytes + " bytes");
        }
        return new TensorInfo(name, dtype, shape, file, dataStart + begin, expectedBytes);
    }

    private static long[] readNonNegativeLongs(Path file, String name, JsonNode entry, String key, int requiredCount) {
        JsonNode node = entry.get(key);
        String expected = requiredCount < 0
                ? "an array of non-negative integers"
                : "an array of " + requiredCount + " non-negative integers";
        if (node == null || !node.isArray() || (requiredCount >= 0 && node.size() != requiredCount)) {
            throw new CheckpointException(file, name, "header entry must have \"" + key + "\" as " + expected
                    + ", found " + describe(node));
        }
        long[] values = new long[node.size()];
        for (int i = 0; i < values.length; i++) {
            JsonNode v = node.get(i);
            if (!v.isIntegralNumber() || !v.canConvertToLong() || v.longValue() < 0) {
                throw new CheckpointException(file, name, "header entry must have \"" + key + "\" as " + expected
                        + ", found " + node);
            }
            values[i] = v.longValue();
        }
        return values;
    }

    /** Two tensors sharing bytes would make writing one silently change the other; the reference rejects it too. */
    private static void requireNoOverlap(Path file, List<TensorInfo> tensors, long dataStart) {
        List<TensorInfo> byStart = tensors.stream()
                .filter(t -> t.byteLength() > 0)
                .sorted(Comparator.comparingLong(TensorInfo::dataOffset))
                .collect(Collectors.toList());
        TensorInfo furthest = null;
        for (TensorInfo t : byStart) {
            if (furthest != null && t.dataOffset() < furthest.dataOffset() + furthest.byteLength()) {
                throw new CheckpointException(file, t.name(), "data_offsets " + dataOffsets(t, dataStart)
                        + " overlap those of tensor '" + furthest.name() + "', " + dataOffsets(furthest, dataStart)
                        + ": expected disjoint byte ranges");
            }
            if (furthest == null || t.dataOffset() + t.byteLength() > furthest.dataOffset() + furthest.byteLength()) {
                furthest = t;
            }
        }
    }

    private static String dataOffsets(TensorInfo t, long dataStart) {
        long begin = t.dataOffset() - dataStart;
        return "[" + begin + ", " + (begin + t.byteLength()) + "]";
    }

    private static String describe(JsonNode node) {
        if (node == null) {
            return "nothing (key missing)";
        }
        String text = node.toString();
        return node.getNodeType() + " " + (text.length() > 80 ? text.substring(0, 80) + "..." : text);
    }

    /** A torch.save zip ("PK\3\4") or raw pickle (0x80, protocol 2-5) read as a length gives an absurd value. */
    private static String pickleHint(ByteBuffer firstBytes) {
        byte b0 = firstBytes.get(0);
        byte b1 = firstBytes.get(1);
        boolean zip = b0 == 'P' && b1 == 'K' && firstBytes.get(2) == 3 && firstBytes.get(3) == 4;
        boolean pickle = (b0 & 0xff) == 0x80 && b1 >= 2 && b1 <= 5;
        if (zip || pickle) {
            return "; it starts like a PyTorch " + (zip ? "zip" : "pickle") + " checkpoint. "
                    + CheckpointFileNames.pickleRefusal("it");
        }
        return "";
    }

    private static void readFully(FileChannel channel, ByteBuffer into, long position) throws IOException {
        long at = position;
        while (into.hasRemaining()) {
            int n = channel.read(into, at);
            if (n < 0) {
                throw new EOFException("file ended at byte " + at + " while reading its header");
            }
            at += n;
        }
    }
}
