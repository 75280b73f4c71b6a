package io.mixtune.model.safetensors;

import static io.mixtune.model.safetensors.HandBuiltSafetensors.littleEndianFloats;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedByInterruptException;
import java.nio.file.Path;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An I/O error that says nothing about the file's content (EIO, a failed mmap, a read interrupted) is a failure of the
 * read, not a damaged checkpoint: an UncheckedIOException naming the file (the CLI's exit 1), not a
 * CheckpointException (exit 2, "download it again"). The tests make one the way a test can as root, who ignores file
 * permissions: an interrupted thread's FileChannel read throws ClosedByInterruptException, an IOException.
 */
class SafetensorsReadFailureTest {
    @TempDir
    Path dir;

    private Path file() throws IOException {
        return HandBuiltSafetensors.write(dir.resolve("w.safetensors"),
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", littleEndianFloats(1.5f, -3f));
    }

    /** What {@code read} throws when the thread is interrupted, the interrupt cleared after. */
    private static UncheckedIOException failedWhileInterrupted(Runnable read) {
        Thread.currentThread().interrupt();
        try {
            return assertThrows(UncheckedIOException.class, read::run);
        } finally {
            Thread.interrupted();
        }
    }

    private void assertReadFails(Consumer<SafetensorsReader> read, String what) throws IOException {
        Path file = file();
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            UncheckedIOException e = failedWhileInterrupted(() -> read.accept(reader));
            assertTrue(e.getMessage().startsWith(file + ": tensor 'w': " + what), e.getMessage());
            assertTrue(e.getCause() instanceof ClosedByInterruptException, String.valueOf(e.getCause()));
        }
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            assertArrayEquals(new float[] {1.5f, -3f}, reader.readFloats("w"), "the file itself reads fine");
        }
    }

    @Test
    void aFailedReadOfTensorDataIsAnIoFailureNamingTheFile() throws IOException {
        assertReadFails(reader -> reader.readFloats("w"), "could not read bytes [");
        assertReadFails(reader -> reader.readFiniteFloats("w"), "could not read bytes [");
        assertReadFails(reader -> reader.readBytesInto("w", ByteBuffer.allocate(8)), "could not read bytes [");
        assertReadFails(reader -> reader.bytes("w"), "could not map bytes [");
    }

    @Test
    void aFailedReadOfTheHeaderIsAnIoFailureNamingTheFile() throws IOException {
        Path file = file();
        UncheckedIOException e = failedWhileInterrupted(() -> SafetensorsReader.open(file).close());
        assertTrue(e.getMessage().startsWith(file + ": could not read"), e.getMessage());
    }
}
