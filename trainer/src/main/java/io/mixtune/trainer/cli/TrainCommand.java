package io.mixtune.trainer.cli;

import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.ProgressLine;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingOutputs;
import io.mixtune.trainer.run.TrainingResult;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Option;
import org.apache.commons.cli.Options;

/** `mixtune train`: runs a recipe; with --resume, continues from its last (or a given) checkpoint. */
final class TrainCommand implements Command {
    @Override
    public String name() {
        return "train";
    }

    @Override
    public String summary() {
        return "fine-tune with a recipe (SFT or DPO / Stage-DPO, with QLoRA); --resume continues a stopped run";
    }

    @Override
    public String usage() {
        return "--recipe R.yaml [--set key.path=value ...] [--resume [CHECKPOINT_DIR | RUN_DIR] | --force]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("recipe", "FILE", "the recipe (see mixtune recipes list)"))
                .addOption(setOption())
                .addOption(Option.builder().longOpt("resume").hasArg().optionalArg(true).argName("DIR")
                        .desc("continue from the checkpoint DIR (or the newest of the run directory DIR), else from the "
                                + "newest checkpoint in output_dir/checkpoints; the recipe must be the run's first")
                        .build())
                .addOption(Mixtune.option("force", null, "start over in an output_dir that holds a run, deleting "
                        + "only what mixtune wrote there (checkpoints, adapters, metrics, recipe.yaml, loss.png)"));
    }

    static Option setOption() {
        return Option.builder().longOpt("set").hasArg().argName("KEY=VALUE")
                .desc("override a recipe value, e.g. --set train.lr=1e-4 (repeatable)").build();
    }

    static Recipe readRecipe(CommandLine line) {
        return readLoaded(line).recipe();
    }

    static RecipeReader.Loaded readLoaded(CommandLine line) {
        Path file = Path.of(Mixtune.requiredOption(line, "recipe"));
        String[] sets = line.getOptionValues("set");
        return RecipeReader.read(file, sets == null ? List.of() : List.of(sets));
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        if (line.hasOption("resume") && line.hasOption("force")) {
            throw new UsageException("--resume continues the run in output_dir and --force starts it over: give one");
        }
        String[] sets = line.getOptionValues("set");
        Training training = Training.load(Path.of(Mixtune.requiredOption(line, "recipe")),
                sets == null ? new String[0] : sets);
        if (line.hasOption("resume")) {
            String given = line.getOptionValue("resume");
            training.resume(given == null ? null : Path.of(given));
        } else if (line.hasOption("force")) {
            training.force();
        }
        long start = System.nanoTime();
        TrainingResult result;
        try (StopSignals signals = StopSignals.install(training::cancel, System.err)) {
            result = training.listener(new ProgressLine(out, System.console() != null)).listener(
                    new TrainingListener() {
                        @Override
                        public void onRunStarted(RunStarted event) {
                            signals.stepsBegan();
                        }
                    }).run();
            if (signals.received() != null && result.cancelled()) {
                List<Path> checkpoints = result.checkpoints();
                out.printf(Locale.ROOT, "stopped by SIG%s at step %d; checkpoint %s: add --resume to the same command "
                        + "to continue%n", signals.received(), result.steps(),
                        checkpoints.isEmpty() ? "(none)" : checkpoints.get(checkpoints.size() - 1));
                return signals.exitCode();
            }
        }
        String took = duration((System.nanoTime() - start) / 1e9);
        if (training.recipe().warm().enabled() && result.alreadyFinished()) {
            out.printf(Locale.ROOT, "done: the WARM run had already finished: no member had a step left; "
                    + "their average was written again: %s%n", result.adapterDir());
            return Mixtune.OK;
        }
        if (training.recipe().warm().enabled()) {
            out.printf(Locale.ROOT, "done: %d steps in %s; WARM average of %d reward models (PEFT format): %s%n",
                    result.steps(), took, training.recipe().warm().members(), result.adapterDir());
            out.println("members: " + Path.of(training.recipe().outputDir(), TrainingOutputs.MEMBERS_DIR)
                    + "/K (each with its metrics.jsonl and loss.png), report: " + Path.of(training.recipe()
                    .outputDir(), TrainingOutputs.WARM_REPORT_FILE));
            return Mixtune.OK;
        }
        if (result.alreadyFinished()) {
            // HF's Trainer resumed at its last step trains nothing too; say so rather than print losses of no step
            out.printf(Locale.ROOT, "done: the run had already finished at step %d: nothing left to train; its "
                    + "adapters were written again from its last checkpoint%n", result.steps());
            out.println("adapter (PEFT format): " + result.adapterDir());
        } else if (training.recipe().train().method().equals("dpo")) {
            printDpo(result, took, out);
        } else {
            TrainingResult.StageResult sft = result.lastStage();
            Map<String, Object> first = sft == null ? null : sft.firstEvaluation();
            Map<String, Object> last = sft == null ? null : sft.lastEvaluation();
            out.printf(Locale.ROOT, "done: %d steps in %s, train loss %.4f -> %.4f%s%n", result.steps(), took,
                    sft == null ? Double.NaN : sft.firstLoss(), sft == null ? Double.NaN : sft.lastLoss(),
                    first == null || last == null ? "" : String.format(Locale.ROOT, ", eval loss %.4f -> %.4f",
                            first.get("eval_loss"), last.get("eval_loss")));
            out.println("adapter (PEFT format): " + result.adapterDir());
        }
        printMetricsFiles(training.recipe(), out);
        return Mixtune.OK;
    }

    private static void printDpo(TrainingResult result, String took, PrintStream out) {
        out.printf(Locale.ROOT, "done: %d steps in %s%n", result.steps(), took);
        for (TrainingResult.StageResult stage : result.stages()) {
            Map<String, Object> eval = stage.lastEvaluation();
            out.printf(Locale.ROOT, "stage %d: loss %.4f -> %.4f, rewards/accuracies %.3f, rewards/margins %.4f%s; "
                    + "adapter %s%n", stage.stage(), stage.firstLoss(), stage.lastLoss(),
                    stage.metric("rewards/accuracies"), stage.metric("rewards/margins"),
                    eval == null ? "" : String.format(Locale.ROOT, ", eval_loss %.4f, eval_rewards/accuracies "
                            + "%.3f, eval_rewards/margins %.4f", eval.get("eval_loss"),
                            eval.get("eval_rewards/accuracies"), eval.get("eval_rewards/margins")),
                    stage.adapterDir());
        }
        out.println("adapter (PEFT format, the last stage's): " + result.adapterDir());
    }

    private static void printMetricsFiles(Recipe recipe, PrintStream out) {
        out.println("metrics: " + Path.of(recipe.outputDir(), "metrics.jsonl") + ", plot: "
                + Path.of(recipe.outputDir(), "loss.png"));
    }

    static String duration(double seconds) {
        long s = Math.round(seconds);
        return s >= 60 ? String.format(Locale.ROOT, "%dm%02ds", s / 60, s % 60) : s + "s";
    }
}
