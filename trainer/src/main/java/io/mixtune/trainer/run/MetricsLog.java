package io.mixtune.trainer.run;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
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
import java.util.Map;

/**
 * {@code metrics.jsonl}: one JSON object per logged step or evaluation, flushed as written. As a listener
 * ({@link #listener}) it opens the run's file when the run starts, truncated to the resumed step.
 */
public final class MetricsLog implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Path file;
    private final BufferedWriter writer;

    /**
     * Opens the log for appending. When resuming at {@code resumedStep}, lines of later steps (written after that
     * checkpoint by the run that stopped) are dropped first, so the log reads as one uninterrupted run.
     */
    public MetricsLog(Path file, long resumedStep) {
        this.file = file;
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

    /** The listener that keeps output_dir/metrics.jsonl for a run; closing it closes the file. */
    public static Listener listener() {
        return new Listener();
    }

    /** Writes every logged step and every evaluation of the run, as the events hold them. */
    public static final class Listener implements TrainingListener, AutoCloseable {
        private MetricsLog log;

        @Override
        public void onRunStarted(RunStarted event) {
            close();
            log = new MetricsLog(event.outputDir().resolve(TrainingOutputs.METRICS_FILE),
                    event.resumedFrom() == null ? -1 : event.firstStep());
        }

        @Override
        public void onStep(StepEnded event) {
            if (event.logged()) {
                log.write(record(event.metrics()));
            }
        }

        @Override
        public void onEvaluation(Evaluated event) {
            log.write(record(event.metrics()));
        }

        @Override
        public void onStageKept(StageKept event) {
            log.write(record(event.metrics()));
        }

        @Override
        public void onRunFinished(RunFinished event) {
            close();
        }

        @Override
        public void close() {
            if (log != null) {
                log.close();
                log = null;
            }
        }
    }

    /** An event's metrics as the JSON record metrics.jsonl holds. */
    public static ObjectNode record(Map<String, Object> metrics) {
        return JSON.valueToTree(metrics);
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
        try {
            writer.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
