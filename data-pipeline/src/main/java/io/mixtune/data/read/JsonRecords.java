package io.mixtune.data.read;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.chat.InvalidRecordException;
import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.function.Consumer;
import java.util.zip.GZIPInputStream;

/**
 * The JSON records of a data file, streamed one at a time however big the file: JSONL or a JSON array, plain or gzip
 * ({@code .gz}). A record that is not valid JSON (or not UTF-8) goes to the invalid-record handler with its file:line.
 */
public final class JsonRecords {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path file;

    public JsonRecords(Path file) {
        this.file = file;
    }

    /** Receives each record with its line number. */
    public interface RecordSink {
        void accept(long line, JsonNode record);
    }

    /**
     * @throws InvalidRecordException for a file that is not JSON text (a Parquet, Arrow or CSV file, or any binary
     *     one), whether or not bad records are skipped: its bytes read as lines would give garbage records
     */
    public void read(RecordSink sink, Consumer<InvalidRecordException> invalid) {
        refuseTableFileNames();
        try (InputStream in = open()) {
            refuseBinaryContent(in);
            if (firstNonBlank(in) == '[') {
                readArray(in, sink);
            } else {
                readLines(in, sink, invalid);
            }
        } catch (NoSuchFileException e) {
            throw new UncheckedIOException(file + ": no such data file", e);
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
    }

    private static final String READS = "mixtune reads JSONL or a JSON array (plain or .gz)";
    private static final List<String> TABLE_EXTENSIONS = List.of(".parquet", ".arrow", ".feather", ".csv", ".tsv");

    private void refuseTableFileNames() {
        String name = file.getFileName().toString().toLowerCase(Locale.ROOT);
        if (name.endsWith(".gz")) {
            name = name.substring(0, name.length() - ".gz".length());
        }
        for (String extension : TABLE_EXTENSIONS) {
            if (name.endsWith(extension)) {
                throw new InvalidRecordException(file.toString(), "a " + extension.substring(1) + " file: " + READS
                        + "; write it as JSONL first, e.g. with pandas or datasets' to_json(out, lines=True)");
            }
        }
    }

    /** Peeks at the first bytes: JSON text holds no NUL byte, and Parquet and Arrow files start with their magic. */
    private void refuseBinaryContent(InputStream in) throws IOException {
        byte[] head = new byte[8192];
        in.mark(head.length);
        int n = in.readNBytes(head, 0, head.length);
        in.reset();
        String start = new String(head, 0, Math.min(n, 6), StandardCharsets.ISO_8859_1);
        String what = null;
        if (start.startsWith("PAR1")) {
            what = "a Parquet file (it starts with PAR1): " + READS + "; write it as JSONL first, e.g. "
                    + "pandas.read_parquet(f).to_json(out, orient='records', lines=True)";
        } else if (start.startsWith("ARROW1")) {
            what = "an Arrow file (it starts with ARROW1): " + READS + "; write it as JSONL first, e.g. "
                    + "datasets.Dataset.from_file(f).to_json(out, lines=True)";
        } else if (n >= 2 && (head[0] & 0xFF) == 0x1F && (head[1] & 0xFF) == 0x8B) {
            what = "gzip-compressed but not named .gz: " + READS + "; name it *.jsonl.gz";
        } else {
            for (int i = 0; i < n && what == null; i++) {
                if (head[i] == 0) {
                    what = "not text (it holds NUL bytes): " + READS + ", as UTF-8 text";
                }
            }
        }
        if (what != null) {
            throw new InvalidRecordException(file.toString(), what);
        }
    }

    private InputStream open() throws IOException {
        InputStream raw = new BufferedInputStream(Files.newInputStream(file), 1 << 16);
        if (file.getFileName().toString().endsWith(".gz")) {
            return new BufferedInputStream(new GZIPInputStream(raw, 1 << 16), 1 << 16);
        }
        return raw;
    }

    /** The first byte that is not white space or a byte-order mark (or -1), peeked: the stream is left as it was. */
    private static int firstNonBlank(InputStream in) throws IOException {
        int limit = 1 << 16;
        in.mark(limit);
        try {
            for (int i = 0; i < limit; i++) {
                int b = in.read();
                if (b != ' ' && b != '\t' && b != '\r' && b != '\n' && b != 0xEF && b != 0xBB && b != 0xBF) {
                    return b;
                }
            }
            return -1;
        } finally {
            in.reset();
        }
    }

    /** JSONL: each line decoded strictly as UTF-8 and parsed alone, so a bad line names itself and spoils no other. */
    private void readLines(InputStream in, RecordSink sink, Consumer<InvalidRecordException> invalid) throws IOException {
        ByteArrayOutputStream line = new ByteArrayOutputStream(4096);
        long number = 0;
        int b;
        do {
            b = in.read();
            if (b != '\n' && b != -1) {
                line.write(b);
                continue;
            }
            number++;
            if (line.size() > 0) {
                String source = file + ":" + number;
                String text;
                try {
                    text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                            .onUnmappableCharacter(CodingErrorAction.REPORT)
                            .decode(ByteBuffer.wrap(line.toByteArray())).toString();
                } catch (CharacterCodingException e) {
                    invalid.accept(new InvalidRecordException(source, "invalid UTF-8: the line is not UTF-8 text"));
                    text = null;
                }
                if (text != null && number == 1 && text.startsWith("\uFEFF")) {
                    text = text.substring(1); // a byte-order mark
                }
                if (text != null && !text.isBlank()) {
                    JsonNode record = null;
                    try {
                        record = JSON.readTree(text);
                    } catch (JsonProcessingException e) {
                        invalid.accept(new InvalidRecordException(source, "malformed JSON: " + e.getOriginalMessage()));
                    }
                    if (record != null) {
                        sink.accept(number, record);
                    }
                }
                line.reset();
            }
        } while (b != -1);
    }

    /** A JSON array of records, streamed element by element; a syntax error ends the file (nothing to resync to). */
    private void readArray(InputStream in, RecordSink sink) throws IOException {
        try (JsonParser parser = JSON.getFactory().createParser(in)) {
            parser.nextToken(); // [
            while (true) {
                JsonToken token = parser.nextToken();
                if (token == JsonToken.END_ARRAY || token == null) {
                    break;
                }
                long line = parser.currentTokenLocation().getLineNr();
                sink.accept(line, JSON.readTree(parser));
            }
        } catch (JsonProcessingException e) {
            long line = e.getLocation() == null ? 0 : e.getLocation().getLineNr();
            throw new InvalidRecordException(file + ":" + line, "malformed JSON: " + e.getOriginalMessage()
                    + " (a JSON array cannot be read past a syntax error)");
        }
    }
}
