package io.mixtune.trainer.distill;

import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.generate.Generator;
import io.mixtune.model.generate.TokenSampler;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.WithoutGrad;
import io.mixtune.trainer.dpo.PreferenceBatch;
import io.mixtune.trainer.recipe.Distillation;
import io.mixtune.trainer.run.TrainingBatch;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.SplittableRandom;

/**
 * GKD's on-policy micro-batches (trl/experimental/gkd, GKDTrainer.training_step; TRL 1.13's DistillationTrainer is the
 * case lmbda 1): with probability lmbda a micro-batch's completions are replaced by the student's own, sampled from
 * each sample's prompt (its tokens before the first trained one) with the recipe's sampling keys and the distillation
 * temperature, up to max_completion_length tokens, ending after the first EOS as TRL masks them. The draw and the
 * samples are functions of the micro-batch's seed (the step's), so a resumed run draws the same; they are not the
 * draws of torch's generator in TRL. The student generates in evaluation mode (no LoRA dropout), without autograd.
 */
final class OnPolicyCompletions {
    private final Distillation distillation;
    private final TokenSampler.Settings settings;
    private final Collection<Integer> eosTokenIds;
    private final long padId;

    OnPolicyCompletions(Distillation distillation, Collection<Integer> eosTokenIds, long padId) {
        this.distillation = distillation;
        this.settings = new TokenSampler.Settings(true, distillation.temperature(), distillation.topK(),
                distillation.topP(), distillation.minP() == null ? 0 : distillation.minP(),
                distillation.repetitionPenalty());
        this.eosTokenIds = eosTokenIds;
        this.padId = padId;
    }

    /** Whether the micro-batch drawing from {@code seed} trains on the student's completions. */
    boolean draws(long seed) {
        return distillation.lmbda() > 0 && new SplittableRandom(seed).nextDouble() < distillation.lmbda();
    }

    /** The batch's prompts with the student's completions, right-padded with padId, the completions as targets. */
    TrainingBatch generate(LoraModel lora, CausalLm student, TrainingBatch batch, long seed) {
        int rows = batch.rows();
        long[][] sequences = new long[rows][];
        int[] promptLengths = new int[rows];
        Generator generator = new Generator(student, eosTokenIds);
        try (LoraModel.Scope evaluating = lora.evaluating()) {
            for (int r = 0; r < rows; r++) {
                long[] prompt = prompt(batch, r);
                TokenSampler sampler = new TokenSampler(settings, seed * 1_000_003L + r);
                List<Integer> completion = WithoutGrad.get(() -> generator.generate(prompt,
                        distillation.maxCompletionLength(), sampler, null));
                sequences[r] = Arrays.copyOf(prompt, prompt.length + completion.size());
                for (int i = 0; i < completion.size(); i++) {
                    sequences[r][prompt.length + i] = completion.get(i);
                }
                promptLengths[r] = prompt.length;
            }
        }
        return PreferenceBatch.completionRows(sequences, promptLengths, padId);
    }

    /** Row r's tokens before its first target: the prompt TRL's DistillationTrainer would generate from. */
    static long[] prompt(TrainingBatch batch, int r) {
        long[] labels = batch.labels()[r];
        int end = 1;
        while (end < labels.length && labels[end] == TokenizedSample.IGNORE) {
            end++;
        }
        return Arrays.copyOf(batch.inputIds()[r], end);
    }
}
