package io.mixtune.trainer.lorahub;

import ai.djl.Device;
import ai.djl.ndarray.NDManager;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.merging.LoraHub;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.trainer.run.Evaluation;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingData;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * `mixtune merge --method lorahub`: composes PEFT adapters for the task of a few example chats ({@link LoraHub}), the
 * loss of each candidate being what `mixtune eval` prints for the base model with that adapter on the examples'
 * assistant tokens ({@link Evaluation}, the same template, truncation and packing), computed with the candidate
 * swapped into the loaded base in memory.
 */
public final class LoraHubMerge {
    private static final int DEFAULT_MAX_SEQ_LEN = 2048;
    private static final String ADAPTER_NAME = "lorahub";

    private LoraHubMerge() {}

    /**
     * @param base the model the adapters were trained on
     * @param examples a chat file (any format mixtune trains on), tokenized with the mistral template
     */
    public record Request(Path base, List<Path> adapters, Path examples, Path out, boolean force,
            LoraHub.Settings settings, MistralCheckpoint.LinearFactory linears, Device device) {}

    /** @throws IllegalArgumentException for anything the user must fix, saying which file and what */
    public static LoraHub.Result run(Request request) {
        Path base = request.base();
        if (!Files.isRegularFile(base.resolve("config.json"))) {
            throw new IllegalArgumentException("base " + base + ": no Hugging Face checkpoint there (config.json"
                    + " missing); lorahub evaluates the adapters on the model they were trained on");
        }
        ModelConfig config = ModelConfig.read(base.resolve("config.json"));
        List<TrainingBatch> batches = examples(request.examples(), base, config);
        try (NDManager manager = NDManager.newBaseManager(request.device());
                CausalLm model = MistralCheckpoint.load(base, manager, request.linears())) {
            LoraModel lora = new LoraModel(model);
            return LoraHub.compose(request.adapters(), request.out(), request.force(), request.settings(), candidate -> {
                lora.putAdapter(ADAPTER_NAME, candidate.config(), candidate.factors());
                return Evaluation.of(model, batches, manager).loss();
            });
        }
    }

    /** The examples as `mixtune eval` batches them; refused when they hold no assistant token to score. */
    private static List<TrainingBatch> examples(Path file, Path base, ModelConfig config) {
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("data " + file + ": no such file (expected a few example chats)");
        }
        int maxSeqLen = Math.min(DEFAULT_MAX_SEQ_LEN, config.maxPositionEmbeddings());
        DataConfig data = new DataConfig(List.of(file.toString()), List.of(), 0, "auto", "mistral", null, maxSeqLen,
                true, "all_assistant_turns", false);
        ChatDataset dataset = SampleCache.tokenize(data, TrainingData.tokenizer(base, config, false), 0);
        List<TokenizedSample> samples = dataset.train();
        if (samples.stream().mapToInt(TokenizedSample::targetCount).sum() == 0) {
            throw new IllegalArgumentException("data " + file + ": no assistant token to score (" + dataset.report()
                    + "): lorahub fits the weights to the examples' assistant replies");
        }
        return Evaluation.batches(samples, true, maxSeqLen, 1, config.eosTokenId());
    }
}
