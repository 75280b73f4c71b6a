package io.mixtune.trainer.distill;

import ai.djl.Device;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.trainer.recipe.Distillation;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.run.EpochSteps;
import io.mixtune.trainer.run.MethodRecipe;
import io.mixtune.trainer.run.SingleStageRun;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingListener;
import io.mixtune.trainer.run.TrainingModel;
import io.mixtune.trainer.run.TrainingResult;
import java.nio.file.Path;
import java.util.Locale;
import java.util.function.BooleanSupplier;

/**
 * Knowledge distillation with (Q)LoRA as TRL 1.13's DistillationTrainer runs it, read top to bottom: {@link #setup}
 * tokenizes the data as SFT does (prompt_completion records or chats, the completion or assistant tokens trained on),
 * checks that the teacher shares the student's tokenizer, loads the student with its adapter and the frozen teacher;
 * {@link #train} runs the loop ({@link TrainingLoop}) with the distillation objective ({@link DistillObjective}),
 * ending with output_dir/adapter. Nothing of the teacher is kept in checkpoints: it is read again on --resume, and the
 * on-policy completions are drawn from the step's seed, so a resumed run continues as the uninterrupted one.
 */
public final class DistillRecipe implements MethodRecipe {
    private final Recipe recipe;
    private final TrainingListener listener;
    private final ChatDataset dataset;
    private final TrainingModel model;
    private final DistillTeacher teacher;
    private final DistillObjective objective;
    private final long totalSteps;

    private DistillRecipe(Recipe recipe, TrainingListener listener) {
        this.recipe = recipe;
        this.listener = listener;
        Device device = TrainingModel.check(recipe);
        dataset = TrainingData.loadTrainingSamples(recipe, listener::onNote);
        DistillTeacher.check(recipe);
        model = TrainingModel.load(recipe, listener::onNote);
        DistillTeacher loaded = null;
        try {
            loaded = DistillTeacher.load(recipe, device, model.computeType());
            objective = new DistillObjective(recipe, model, loaded, dataset);
        } catch (RuntimeException e) {
            if (loaded != null) {
                loaded.close();
            }
            model.close();
            throw e;
        }
        teacher = loaded;
        totalSteps = new EpochSteps(objective.microBatchesPerEpoch(), recipe.train().gradientAccumulation())
                .stageSteps(recipe.train());
    }

    /** @param listener receives the notes of setting up (the data report) and, later, the run's events */
    public static DistillRecipe setup(Recipe recipe, TrainingListener listener) {
        return new DistillRecipe(recipe, listener);
    }

    @Override
    public long totalSteps() {
        return totalSteps;
    }

    @Override
    public TrainingResult train(Path resumeFrom, BooleanSupplier cancelled) {
        return new SingleStageRun(recipe, model, listener, totalSteps).train(resumeFrom, cancelled,
                this::describePlan, start -> objective);
    }

    private void describePlan(Path outputDir) {
        Distillation distillation = recipe.distillation();
        listener.onNote(model.describe(recipe));
        listener.onNote(String.format(Locale.ROOT, "teacher %s (%s, %d layers%s%s), frozen, no autograd",
                DistillTeacher.dir(recipe), teacher.model().config().modelType().hfName(),
                teacher.model().config().numHiddenLayers(), teacher.model().config().isMixtureOfExperts()
                        ? ", " + teacher.model().config().numLocalExperts() + " experts" : "",
                distillation.teacherAdapter() != null ? ", adapter " + distillation.teacherAdapter() : ""));
        listener.onNote(String.format(Locale.ROOT, "distillation: beta %s (%s), temperature %s, lmbda %s%s",
                distillation.beta(), distillation.beta() == 0 ? "forward KL" : distillation.beta() == 1
                        ? "reverse KL" : "generalized JSD", distillation.temperature(), distillation.lmbda(),
                distillation.lmbda() > 0 ? String.format(Locale.ROOT, " (on-policy completions of up to %d tokens, "
                        + "top_p %s, top_k %d)", distillation.maxCompletionLength(), distillation.topP(),
                        distillation.topK()) : " (the data's completions only)"));
        listener.onNote(String.format(Locale.ROOT, "data: %s; %d train / %d validation samples, %d micro-batches an "
                + "epoch (never packed)", dataset.report(), dataset.train().size(), dataset.validation().size(),
                objective.microBatchesPerEpoch()));
        listener.onNote(SingleStageRun.describeSteps(recipe, totalSteps, "", outputDir));
    }

    @Override
    public void close() {
        teacher.close();
        model.close();
    }
}
