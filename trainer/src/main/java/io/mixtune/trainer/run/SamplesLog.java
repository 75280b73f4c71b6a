package io.mixtune.trainer.run;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * {@code samples.jsonl}: the train.eval_prompts answers of every evaluation, one JSON object per prompt
 * ({@code step}, {@code stage} in Stage-DPO, {@code prompt}, {@code completion}), flushed as written. A run without
 * eval_prompts writes no file. On --resume the records of steps after the resumed checkpoint (written by the run that
 * stopped) are dropped first, as {@link MetricsLog} drops its own, so no step's samples appear twice.
 */
public final class SamplesLog implements TrainingListener, AutoCloseable {
    private Path file;
    private long resumedStep = -1;
    private MetricsLog log;

    @Override
    public void onRunStarted(RunStarted event) {
        close();
        file = event.outputDir().resolve(TrainingOutputs.SAMPLES_FILE);
        resumedStep = event.resumedFrom() == null ? -1 : event.firstStep();
        if (resumedStep >= 0 && Files.exists(file)) {
            log = new MetricsLog(file, resumedStep); // even if no evaluation is left to run
        }
    }

    @Override
    public void onSamples(SamplesGenerated event) {
        if (log == null) {
            log = new MetricsLog(file, resumedStep);
        }
        for (Sample sample : event.samples()) {
            ObjectNode record = log.record(event.step());
            if (event.stage() != null) {
                record.put("stage", event.stage());
            }
            record.put("prompt", sample.prompt());
            record.put("completion", sample.completion());
            log.write(record);
        }
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
