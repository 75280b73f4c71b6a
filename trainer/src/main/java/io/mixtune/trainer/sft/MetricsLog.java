package io.mixtune.trainer.sft;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.trainer.tracking.MetricsSink;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/** {@code metrics.jsonl}: one JSON object per logged step or evaluation, flushed as written. */
public final class MetricsLog implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path file;
    private final BufferedWriter writer;
    private final MetricsSink sink;

    /**
     * Opens the log for appending. When resuming at {@code resumedStep}, lines of later steps (written after that
     * checkpoint by the run that stopped) are dropped first, so the log reads as one uninterrupted run.
     */
    public MetricsLog(Path file, long resumedStep) {
        this(file, resumedStep, MetricsSink.NONE);
    }

    /** The same, handing every record written to {@code sink} too (closed with this log). */
    public MetricsLog(Path file, long resumedStep, MetricsSink sink) {
        this.file = file;
        this.sink = sink;
        try {
            if (resumedStep < 0) {
                Files.deleteIfExists(file);
            } else if (Files.exists(file)) {
                List<String> kept = new ArrayList<>();
                for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                    try {
                        JsonNode record = JSON.readTree(line);
                        if (record != null && record.path("step").asLong(Long.MAX_VALUE) <= resumedStep) {
                            kept.add(line);
                        }
                    } catch (IOException e) {
                        // a line cut short by the kill: dropped
                    }
                }
                Path partial = file.resolveSibling(file.getFileName() + ".partial");
                Files.write(partial, kept, StandardCharsets.UTF_8);
                Files.move(partial, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            }
            writer = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot open " + file + ": " + e.getMessage(), e);
        }
    }

    public ObjectNode record(long step) {
        ObjectNode record = JSON.createObjectNode();
        record.put("step", step);
        return record;
    }

    public void write(ObjectNode record) {
        try {
            writer.write(JSON.writeValueAsString(record));
            writer.newLine();
            writer.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + e.getMessage(), e);
        }
        sink.write(record);
    }

    /** Every record of a metrics file, in order. */
    public static List<JsonNode> read(Path file) {
        List<JsonNode> records = new ArrayList<>();
        try {
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                if (!line.isBlank()) {
                    records.add(JSON.readTree(line));
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + e.getMessage(), e);
        }
        return records;
    }

    @Override
    public void close() {
        try (sink) {
            writer.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
