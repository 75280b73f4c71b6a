package io.mixtune.trainer.run;

import java.io.PrintStream;
import java.util.Locale;

/**
 * Training progress: on a terminal one line redrawn in place (bar, step/total, loss, lr, tokens/s, ETA); otherwise a
 * plain log line per logged step, which is what log files and CI want.
 */
public final class ProgressLine implements TrainingListener {
    private static final int BAR_WIDTH = 24;
    private final PrintStream out;
    private final boolean terminal;
    private long totalSteps;
    private long startNanos = System.nanoTime();
    private long firstStep;
    private boolean drawn;

    /** @param terminal redraw one line in place (a console), else a plain line per logged step */
    public ProgressLine(PrintStream out, boolean terminal) {
        this.out = out;
        this.terminal = terminal;
    }

    @Override
    public void onNote(String line) {
        message(line);
    }

    @Override
    public void onRunStarted(RunStarted event) {
        firstStep = event.firstStep();
        totalSteps = event.totalSteps();
        startNanos = System.nanoTime();
    }

    @Override
    public void onStageStarted(StageStarted event) {
        if (event.description() != null) {
            message(event.description());
        }
    }

    @Override
    public void onStep(StepEnded event) {
        if (event.logged()) {
            step(event.step(), event.loss(), event.learningRate(), event.tokensPerSecond(), event.figures());
        }
    }

    @Override
    public void onEvaluation(Evaluated event) {
        message(event.summary());
    }

    /** One line per prompt, its answer quoted so that a newline in it does not break the line. */
    @Override
    public void onSamples(SamplesGenerated event) {
        for (Sample sample : event.samples()) {
            message("step " + event.step() + ": " + quoted(sample.prompt()) + " -> " + quoted(sample.completion()));
        }
    }

    static String quoted(String text) {
        return '"' + text.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n").replace("\r", "\\r")
                .replace("\t", "\\t") + '"';
    }

    @Override
    public void onCheckpoint(CheckpointSaved event) {
        message("step " + event.step() + ": checkpoint " + event.directory());
    }

    @Override
    public void onRunFinished(RunFinished event) {
        finish();
    }

    /** @param figures more figures shown after the loss, such as DPO's reward accuracy, or "" */
    public void step(long step, double loss, double lr, double tokensPerSecond, String figures) {
        double elapsed = (System.nanoTime() - startNanos) / 1e9;
        double perStep = elapsed / Math.max(1, step - firstStep);
        String eta = duration(perStep * (totalSteps - step));
        String line = String.format(Locale.ROOT, "step %d/%d  loss %.4f%s  lr %.2e  %,.0f tok/s  eta %s", step,
                totalSteps, loss, figures, lr, tokensPerSecond, eta);
        if (terminal) {
            int filled = (int) (BAR_WIDTH * step / Math.max(1, totalSteps));
            out.print("\r[" + "#".repeat(filled) + " ".repeat(BAR_WIDTH - filled) + "] " + line + "\u001b[K");
            out.flush();
            drawn = true;
        } else {
            out.println(line);
        }
    }

    /** A line that must stay (evaluation, checkpoint): printed above the bar. */
    public void message(String line) {
        if (drawn) {
            out.print("\r\u001b[K");
        }
        out.println(line);
        drawn = false;
    }

    public void finish() {
        if (drawn) {
            out.println();
            drawn = false;
        }
    }

    static String duration(double seconds) {
        long s = Math.max(0, Math.round(seconds));
        return s >= 3600 ? String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                : String.format(Locale.ROOT, "%d:%02d", s / 60, s % 60);
    }
}
