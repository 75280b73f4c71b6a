package io.mixtune.trainer.cli;

import io.mixtune.trainer.chat.TemplateWarning;
import io.mixtune.trainer.dpo.DpoRecipe;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.sft.RunDirectory;
import io.mixtune.trainer.sft.SftRecipe;
import io.mixtune.trainer.sft.TrainingCheckpoint;
import io.mixtune.trainer.sft.TrainingModel;
import io.mixtune.trainer.sft.TrainingOutputs;
import java.io.PrintStream;
import java.nio.file.Files;
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
        RecipeReader.Loaded loaded = readLoaded(line);
        loaded.warnings().forEach(warning -> out.println("warning: " + warning));
        String markers = TemplateWarning.of(loaded.recipe());
        if (markers != null) {
            out.println("warning: " + markers);
        }
        try {
            return run(loaded.recipe(), line, out);
        } catch (RecipeValueException e) {
            throw loaded.locate(e); // at the line that set the key
        }
    }

    private int run(Recipe recipe, CommandLine line, PrintStream out) {
        TrainingModel.check(recipe); // a model this install cannot train is refused before output_dir is made
        RunDirectory.Start start = line.hasOption("resume") ? RunDirectory.Start.RESUME
                : line.hasOption("force") ? RunDirectory.Start.FORCE : RunDirectory.Start.FRESH;
        try (RunDirectory run = RunDirectory.open(recipe, start)) {
            Path resume = null;
            if (start == RunDirectory.Start.RESUME) {
                resume = checkpointToResume(recipe, line.getOptionValue("resume"), out);
                String warning = run.requireSameRecipe(recipe, resume);
                if (warning != null) {
                    out.println(warning);
                }
            }
            return train(recipe, resume, out);
        }
    }

    private static int train(Recipe recipe, Path resume, PrintStream out) {
        long start = System.nanoTime();
        if (recipe.train().method().equals("dpo")) {
            return trainDpo(recipe, resume, start, out);
        }
        try (SftRecipe sft = SftRecipe.setup(recipe, out, System.console() != null)) {
            SftRecipe.Result result = sft.train(resume);
            out.printf(Locale.ROOT, "done: %d steps in %s, train loss %.4f -> %.4f%s%n", result.steps(),
                    duration((System.nanoTime() - start) / 1e9), result.firstLoss(), result.lastLoss(),
                    result.firstEvalLoss() == null || result.lastEvalLoss() == null ? ""
                            : String.format(Locale.ROOT, ", eval loss %.4f -> %.4f", result.firstEvalLoss(),
                                    result.lastEvalLoss()));
            out.println("adapter (PEFT format): " + result.adapterDir());
            printMetricsFiles(recipe, out);
        }
        return Mixtune.OK;
    }

    private static int trainDpo(Recipe recipe, Path resume, long start, PrintStream out) {
        try (DpoRecipe dpo = DpoRecipe.setup(recipe, out, System.console() != null)) {
            DpoRecipe.Result result = dpo.train(resume);
            out.printf(Locale.ROOT, "done: %d steps in %s%n", result.steps(),
                    duration((System.nanoTime() - start) / 1e9));
            for (DpoRecipe.StageResult stage : result.stages()) {
                Map<String, Double> eval = stage.evalMetrics();
                out.printf(Locale.ROOT, "stage %d: loss %.4f -> %.4f, rewards/accuracies %.3f, rewards/margins %.4f%s; "
                        + "adapter %s%n", stage.stage(), stage.firstLoss(), stage.lastLoss(),
                        stage.metrics().get("rewards/accuracies"), stage.metrics().get("rewards/margins"),
                        eval == null ? "" : String.format(Locale.ROOT, ", eval_loss %.4f, eval_rewards/accuracies "
                                + "%.3f, eval_rewards/margins %.4f", eval.get("eval_loss"),
                                eval.get("eval_rewards/accuracies"), eval.get("eval_rewards/margins")),
                        stage.adapterDir());
            }
            out.println("adapter (PEFT format, the last stage's): " + result.adapterDir());
            printMetricsFiles(recipe, out);
        }
        return Mixtune.OK;
    }

    private static void printMetricsFiles(Recipe recipe, PrintStream out) {
        out.println("metrics: " + Path.of(recipe.outputDir(), "metrics.jsonl") + ", plot: "
                + Path.of(recipe.outputDir(), "loss.png"));
    }

    /**
     * The given checkpoint, or the newest whole one of output_dir, or of the run directory given instead of a
     * checkpoint (an easy mistake: that is what is meant); a damaged newest one is named and the one before it used.
     */
    private static Path checkpointToResume(Recipe recipe, String given, PrintStream out) {
        Path checkpoints = Path.of(recipe.outputDir(), TrainingOutputs.CHECKPOINTS_DIR);
        if (given != null) {
            Path dir = Path.of(given);
            if (Files.isDirectory(dir.resolve(TrainingOutputs.CHECKPOINTS_DIR))
                    && !Files.exists(dir.resolve(TrainingCheckpoint.STATE_JSON))) {
                out.println("--resume " + dir + ": a run directory, not a checkpoint: resuming from its newest whole "
                        + "checkpoint");
                checkpoints = dir.resolve(TrainingOutputs.CHECKPOINTS_DIR);
            } else if (!TrainingCheckpoint.list(dir).isEmpty()) {
                checkpoints = dir; // RUN/checkpoints itself
            } else {
                TrainingCheckpoint.requireComplete(dir);
                return dir;
            }
        }
        List<Path> all = TrainingCheckpoint.list(checkpoints);
        if (all.isEmpty()) {
            throw new IllegalArgumentException("--resume: no checkpoint in " + checkpoints + " to resume from");
        }
        for (int i = all.size() - 1; i >= 0; i--) {
            String problem = TrainingCheckpoint.verify(all.get(i));
            if (problem == null) {
                return all.get(i);
            }
            out.println("warning: skipping " + problem);
        }
        throw new IllegalArgumentException("--resume: every checkpoint in " + checkpoints + " is damaged");
    }

    static String duration(double seconds) {
        long s = Math.round(seconds);
        return s >= 60 ? String.format(Locale.ROOT, "%dm%02ds", s / 60, s % 60) : s + "s";
    }
}
