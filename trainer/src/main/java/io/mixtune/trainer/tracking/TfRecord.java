package io.mixtune.trainer.tracking;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.zip.CRC32C;

/**
 * TFRecord framing, the container of TensorBoard's event files: the data's length (uint64, little-endian), the masked
 * CRC32C of those 8 bytes, the data, the masked CRC32C of the data (tensorflow/core/lib/io/record_writer.cc).
 */
final class TfRecord {
    /** Added after rotating, so that a CRC of data that holds CRCs does not look like one (tensorflow crc32c.h). */
    private static final int MASK_DELTA = 0xa282ead8;

    private TfRecord() {}

    static byte[] frame(byte[] data) {
        ByteBuffer record = ByteBuffer.allocate(8 + 4 + data.length + 4).order(ByteOrder.LITTLE_ENDIAN);
        record.putLong(data.length);
        record.putInt(maskedCrc32c(record.array(), 0, 8));
        record.put(data);
        record.putInt(maskedCrc32c(data, 0, data.length));
        return record.array();
    }

    static int maskedCrc32c(byte[] data, int offset, int length) {
        CRC32C crc = new CRC32C();
        crc.update(data, offset, length);
        int value = (int) crc.getValue();
        return ((value >>> 15) | (value << 17)) + MASK_DELTA;
    }
}
