package io.mixtune.trainer;

import io.mixtune.lora.adapter.AdapterMerge;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.model.checkpoint.StagingDirectory;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * Folding an adapter into its base from Java, what {@code mixtune merge-adapter} runs: W + scale * B A for every
 * adapted layer (PEFT's merge_and_unload), streamed one tensor at a time into a plain Hugging Face checkpoint with the
 * base's config and the tokenizer files (the adapter's own where it carries them, as mixtune's adapters do). A reward
 * model's adapter gives a ForSequenceClassification checkpoint.
 *
 * <pre>{@code
 * MergeAdapter.Result merged = MergeAdapter.of(Path.of("out/base-model"), Path.of("out/adapter"), Path.of("merged"))
 *         .dtype(DType.BF16)
 *         .run();
 * }</pre>
 *
 * <p>An output that is, holds or lies inside an input is refused, and a non-empty one unless {@link #force}: both
 * throw {@link InvalidOptionException} ("out"). Nothing prints.
 */
public final class MergeAdapter {
    private final Path model;
    private final Path adapter;
    private final Path out;
    private DType dtype;
    private boolean force;

    private MergeAdapter(Path model, Path adapter, Path out) {
        this.model = Objects.requireNonNull(model, "model");
        this.adapter = Objects.requireNonNull(adapter, "adapter");
        this.out = Objects.requireNonNull(out, "out");
    }

    /**
     * @param model the base model directory
     * @param adapter the LoRA adapter (PEFT format)
     * @param out the directory of the merged checkpoint (not the base's)
     */
    public static MergeAdapter of(Path model, Path adapter, Path out) {
        return new MergeAdapter(model, adapter, out);
    }

    /** The dtype of the merged weights; default: each tensor's own. */
    public MergeAdapter dtype(DType value) {
        this.dtype = value;
        return this;
    }

    /** Write into a non-empty output, replacing the files merging writes there (weights, index, config, tokenizer). */
    public MergeAdapter force(boolean replace) {
        this.force = replace;
        return this;
    }

    /**
     * @param weightFiles the safetensors files written
     * @param copiedFiles the files besides the weights written beside them (config, tokenizer), by name
     */
    public record Result(Path model, Path adapter, Path out, DType dtype, List<Path> weightFiles,
            List<String> copiedFiles) {}

    public Result run() {
        InputDirectories.requireModel("model", model);
        InputDirectories.requireAdapter("adapter", adapter);
        for (Path input : List.of(model, adapter)) {
            String problem = PathOverlap.problem("--out", out, input);
            if (problem != null) {
                throw new InvalidOptionException("out", problem);
            }
        }
        if (Files.exists(out) && !Files.isDirectory(out)) {
            throw new InvalidOptionException("out", "--out " + out + " is a file; expected a directory for the merged"
                    + " checkpoint");
        }
        if (!force && !StagingDirectory.isEmptyOrAbsent(out)) {
            throw new InvalidOptionException("out", "--out " + out + " exists and is not empty; choose another --out,"
                    + " or pass --force to replace the files merging writes there (any other file stays)");
        }
        List<Path> files = AdapterMerge.merge(model, adapter, out, dtype, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        List<String> copied = List.copyOf(AdapterMerge.companionSources(model, adapter).keySet());
        return new Result(model, adapter, out, dtype, files, copied);
    }
}
