package io.mixtune.trainer.sft;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.trainer.optim.AdamW;
import io.mixtune.trainer.optim.LossScaler;
import io.mixtune.trainer.run.OptimizerStep;
import io.mixtune.trainer.run.StepContext;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * SFT steps in float16 compute on a model whose residual stream passes float16's largest value (65504): with the
 * residual in float32, as PEFT's QLoRA keeps it, the steps run (none skipped) and their losses are float32's within
 * float16's rounding, plain and with gradient checkpointing (whose kept layer inputs are the float32 residual).
 */
class Float16TrainingTest {
    private static final int STEPS = 3;

    /**
     * A tied lm_head is the float32 embedding table, whose logits and head gradient are float32: on a random model at
     * transformers' init (embeddings of 60000 as a head, or weights of std 0.5 all the way down, overflow the float16
     * gradients at GradScaler's 2^16, and the steps are skipped as they would be in torch).
     */
    @ParameterizedTest(name = "mixtral {0}, tied {1}")
    @CsvSource({"false, false", "true, false", "false, true"})
    void float16StepsOnAResidualBeyondItsRangeTrackFloat32(boolean moe, boolean tied, @TempDir Path dir) {
        ModelConfig config = new ModelConfig(moe ? ModelConfig.ModelType.MIXTRAL : ModelConfig.ModelType.MISTRAL,
                32, 48, 2, 4, 2, 8, 97, 1e-5, 10000.0, null, 256, tied, moe ? 4 : 0, moe ? 2 : 0, moe ? 0.02 : 0.0,
                1, 2);
        writeCheckpoint(config, dir, !tied);
        double[] float32 = losses(dir, DataType.FLOAT32, false);
        double[] float16 = losses(dir, DataType.FLOAT16, false);
        double[] checkpointed = losses(dir, DataType.FLOAT16, true);
        System.out.printf(Locale.ROOT, "mixtral %s, tied %s losses: fp32 %s, fp16 %s, fp16 checkpointed %s%n", moe,
                tied, Arrays.toString(float32), Arrays.toString(float16), Arrays.toString(checkpointed));
        for (int step = 0; step < STEPS; step++) {
            assertEquals(float32[step], float16[step], 2e-4 * float32[step], "step " + (step + 1));
            assertEquals(float32[step], checkpointed[step], 2e-4 * float32[step], "checkpointed step " + (step + 1));
        }
        assertTrue(float32[STEPS - 1] < float32[0], "the steps train: " + Arrays.toString(float32));
    }

    private static double[] losses(Path dir, DataType computeType, boolean checkpointing) {
        try (NDManager manager = NDManager.newBaseManager();
                CausalLm model = MistralCheckpoint.load(dir, manager, MistralCheckpoint.DENSE, computeType)) {
            LoraModel lora = new LoraModel(model);
            lora.addAdapter(TrainingModel.ADAPTER_NAME, LoraConfig.of(4, 8, List.of(LoraConfig.ALL_LINEAR)),
                    LoraModel.Init.PEFT_DEFAULT, 11);
            lora.setTraining(true);
            List<NDArray> parameters = lora.parameters(TrainingModel.ADAPTER_NAME);
            AdamW optimizer = new AdamW(parameters, 0.9, 0.999, 1e-8, 0.0);
            LossScaler scaler = computeType == DataType.FLOAT16 ? LossScaler.dynamic() : LossScaler.off();
            StepContext context = new StepContext(model, parameters, manager, optimizer, scaler, 1.0,
                    model.config().routerAuxLossCoef(), checkpointing, 0);
            double[] losses = new double[STEPS];
            for (int step = 0; step < STEPS; step++) {
                OptimizerStep.Result<SftObjective.Measured> result =
                        OptimizerStep.run(SftObjective::gradients, List.of(batch()), context, 2e-2);
                assertFalse(result.skipped(), computeType + " step " + (step + 1) + " skipped");
                losses[step] = result.loss();
            }
            return losses;
        }
    }

    private static TrainingBatch batch() {
        long[][] ids = new long[2][16];
        long[][] positions = new long[2][16];
        for (int r = 0; r < 2; r++) {
            for (int t = 0; t < 16; t++) {
                ids[r][t] = (t * (7 + 4 * r) + 3 * r + 1) % 97;
                positions[r][t] = t;
            }
        }
        return new TrainingBatch(ids, ids, positions, null, null);
    }

    /**
     * A random tiny model; pastFloat16Range: weights of std 0.5, embeddings of ±60000 (in float16's range) and the
     * first MLP's down projection scaled by 500, so what the first layer adds takes the residual past 65504.
     */
    private static void writeCheckpoint(ModelConfig config, Path dir, boolean pastFloat16Range) {
        RandomCheckpoint.write(config, dir, 7, DType.F32, Long.MAX_VALUE, pastFloat16Range ? 0.5 : 0.02);
        Path file = dir.resolve("model.safetensors");
        List<TensorSpec> specs = new ArrayList<>();
        Map<String, float[]> values = new HashMap<>();
        if (!pastFloat16Range) {
            return;
        }
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            for (String name : Set.copyOf(reader.names())) {
                float[] tensor = reader.readFloats(name);
                boolean firstDown = name.startsWith("model.layers.0.")
                        && (name.endsWith("down_proj.weight") || name.endsWith("w2.weight"));
                for (int i = 0; i < tensor.length; i++) {
                    if (name.equals("model.embed_tokens.weight")) {
                        tensor[i] = Math.copySign(60000f, tensor[i]);
                    } else if (firstDown) {
                        tensor[i] *= 500f;
                    }
                }
                specs.add(new TensorSpec(name, DType.F32, reader.info(name).shape()));
                values.put(name, tensor);
            }
        }
        SafetensorsWriter.writeFile(file, specs, spec -> values.get(spec.name()));
    }
}
