package io.mixtune.trainer.tracking;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * The few protocol-buffers encodings TensorBoard's {@code Event} needs (varint, 64- and 32-bit fixed, length-delimited),
 * written by field number as protoc's generated code writes them, so the bytes equal those of Python's
 * {@code Event.SerializeToString()} for the same fields (TensorBoardWriterTest holds that). Proto3: a plain field at
 * its default is left out, as there.
 */
final class ProtoMessage {
    private static final int VARINT = 0;
    private static final int FIXED64 = 1;
    private static final int LENGTH_DELIMITED = 2;
    private static final int FIXED32 = 5;

    private final ByteArrayOutputStream bytes = new ByteArrayOutputStream();

    ProtoMessage varint(int field, long value) {
        if (value != 0) {
            tag(field, VARINT);
            writeVarint(value);
        }
        return this;
    }

    ProtoMessage fixed64(int field, double value) {
        if (value != 0) {
            tag(field, FIXED64);
            long bits = Double.doubleToRawLongBits(value);
            for (int i = 0; i < 8; i++) {
                bytes.write((int) (bits >>> (8 * i)));
            }
        }
        return this;
    }

    /**
     * Written even at 0: the one float field here, {@code Summary.Value.simple_value}, is a member of a oneof, which
     * has presence (left out, TensorBoard would not see a scalar at all: a learning rate of 0 at the first warmup
     * step went missing so).
     */
    ProtoMessage fixed32(int field, float value) {
        tag(field, FIXED32);
        int bits = Float.floatToRawIntBits(value);
        for (int i = 0; i < 4; i++) {
            bytes.write(bits >>> (8 * i));
        }
        return this;
    }

    ProtoMessage bytes(int field, byte[] value) {
        tag(field, LENGTH_DELIMITED);
        writeVarint(value.length);
        bytes.writeBytes(value);
        return this;
    }

    ProtoMessage string(int field, String value) {
        return value.isEmpty() ? this : bytes(field, value.getBytes(StandardCharsets.UTF_8));
    }

    /** A sub-message; written even when empty, as protobuf writes a sub-message that was set. */
    ProtoMessage message(int field, ProtoMessage value) {
        return bytes(field, value.toByteArray());
    }

    byte[] toByteArray() {
        return bytes.toByteArray();
    }

    private void tag(int field, int wireType) {
        writeVarint((long) field << 3 | wireType);
    }

    private void writeVarint(long value) {
        while ((value & ~0x7FL) != 0) {
            bytes.write((int) (value & 0x7F) | 0x80);
            value >>>= 7;
        }
        bytes.write((int) value);
    }
}
