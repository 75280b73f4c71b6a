package io.mixtune.merging;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The pieces of a SentencePiece {@code tokenizer.model} (Mistral's and Llama's original tokenizer), in id order: what
 * a merge compares between inputs and what a GGUF export writes as {@code tokenizer.ggml.tokens}, scores and types.
 */
public final class SentencePieceModel {
    /** sentencepiece_model.proto's ModelProto.SentencePiece.Type values. */
    public static final int NORMAL = 1;
    public static final int UNKNOWN = 2;
    public static final int CONTROL = 3;
    public static final int USER_DEFINED = 4;
    public static final int UNUSED = 5;
    public static final int BYTE = 6;

    /** One piece: its text, score and type (one of the constants above). */
    public record Piece(String text, float score, int type) {}

    private SentencePieceModel() {}

    /**
     * SentencePiece's ModelProto (sentencepiece_model.proto): field 1 holds the pieces in id order, each a message
     * of piece (1, string), score (2, float) and type (3, enum); the other fields (trainer, normalizer specs) are
     * skipped.
     *
     * @throws IllegalArgumentException naming the file when it is not a SentencePiece model
     */
    public static List<Piece> read(Path file) {
        byte[] content;
        try {
            content = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
        ByteBuffer model = ByteBuffer.wrap(content).order(ByteOrder.LITTLE_ENDIAN);
        List<Piece> pieces = new ArrayList<>();
        try {
            while (model.hasRemaining()) {
                long key = varint(model);
                if (key >>> 3 == 1 && (key & 7) == 2) {
                    ByteBuffer piece = lengthDelimited(model);
                    String text = null;
                    float score = 0;
                    long type = NORMAL; // the field's default
                    while (piece.hasRemaining()) {
                        long field = varint(piece);
                        if (field >>> 3 == 1 && (field & 7) == 2) {
                            ByteBuffer bytes = lengthDelimited(piece);
                            byte[] utf8 = new byte[bytes.remaining()];
                            bytes.get(utf8);
                            text = new String(utf8, StandardCharsets.UTF_8);
                        } else if (field >>> 3 == 2 && (field & 7) == 5) {
                            score = piece.getFloat();
                        } else if (field >>> 3 == 3 && (field & 7) == 0) {
                            type = varint(piece);
                        } else {
                            skip(piece, field);
                        }
                    }
                    if (text == null) {
                        throw new IllegalArgumentException("piece " + pieces.size() + " has no text");
                    }
                    pieces.add(new Piece(text, score, (int) type));
                } else {
                    skip(model, key);
                }
            }
        } catch (BufferUnderflowException | IllegalArgumentException e) {
            throw new IllegalArgumentException(file + ": not a SentencePiece model (" + (e.getMessage() == null
                    ? "cut short" : e.getMessage()) + ")");
        }
        if (pieces.isEmpty()) {
            throw new IllegalArgumentException(file + ": not a SentencePiece model (no pieces)");
        }
        return pieces;
    }

    private static long varint(ByteBuffer buffer) {
        long value = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            byte b = buffer.get();
            value |= (long) (b & 0x7f) << shift;
            if (b >= 0) {
                return value;
            }
        }
        throw new IllegalArgumentException("a varint longer than 10 bytes");
    }

    private static ByteBuffer lengthDelimited(ByteBuffer buffer) {
        long length = varint(buffer);
        if (length < 0 || length > buffer.remaining()) {
            throw new IllegalArgumentException("a field of " + length + " bytes where " + buffer.remaining()
                    + " are left");
        }
        ByteBuffer field = buffer.slice(buffer.position(), (int) length).order(ByteOrder.LITTLE_ENDIAN);
        buffer.position(buffer.position() + (int) length);
        return field;
    }

    private static void skip(ByteBuffer buffer, long key) {
        switch ((int) (key & 7)) {
            case 0 -> varint(buffer);
            case 1 -> buffer.position(buffer.position() + 8);
            case 2 -> lengthDelimited(buffer);
            case 5 -> buffer.position(buffer.position() + 4);
            default -> throw new IllegalArgumentException("wire type " + (key & 7) + " of field " + (key >>> 3));
        }
    }
}
