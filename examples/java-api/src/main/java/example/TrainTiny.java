package example;

import io.mixtune.trainer.Training;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Fine-tunes the tiny Mixtral preset on the bundled chats for a few steps from Java, printing each step's loss from a
 * listener of its own. Usage: TrainTiny OUTPUT_DIR [STEPS] (run from the repository root, where recipes/ is).
 */
public final class TrainTiny {
    /** What the listener saw, and what the run returned. */
    public record Outcome(List<Long> steps, List<Double> losses, List<Double> evalLosses, TrainingResult result) {}

    public static Outcome train(Path repository, Path outputDir, int steps) {
        List<Long> seen = new ArrayList<>();
        List<Double> losses = new ArrayList<>();
        List<Double> evalLosses = new ArrayList<>();
        Training training = Training.load(repository.resolve("recipes/quickstart.yaml"),
                "data.files=[" + repository.resolve("data/samples/chats.jsonl") + "]",
                "train.max_steps=" + steps, "train.eval_every=" + steps, "output_dir=" + outputDir);
        training.listener(new TrainingListener() {
            @Override
            public void onStep(StepEnded step) {
                seen.add(step.step());
                losses.add(step.loss());
                System.out.printf("step %d/%d: loss %.4f%n", step.step(), step.totalSteps(), step.loss());
            }

            @Override
            public void onEvaluation(Evaluated evaluation) {
                evalLosses.add(evaluation.loss());
            }
        });
        TrainingResult result = training.run();
        System.out.println("adapter (PEFT format): " + result.adapterDir());
        return new Outcome(seen, losses, evalLosses, result);
    }

    public static void main(String[] args) {
        train(Path.of("."), Path.of(args[0]), args.length > 1 ? Integer.parseInt(args[1]) : 5);
    }
}
