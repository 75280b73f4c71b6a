package io.mixtune.trainer;

import ai.djl.Device;
import io.mixtune.merging.LoraHub;
import io.mixtune.merging.MergeConfig;
import io.mixtune.merging.MergeReport;
import io.mixtune.merging.MergeYaml;
import io.mixtune.merging.ModelMerge;
import io.mixtune.model.checkpoint.RandomCheckpoint;
import io.mixtune.trainer.device.ComputeDevice;
import io.mixtune.trainer.lorahub.LoraHubMerge;
import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * Merging from Java, what {@code mixtune merge} runs: checkpoints or PEFT adapters averaged or merged by one of
 * mergekit's methods (or swa, lawa, ema, warm), as a {@link MergeConfig} built in code or read from a mergekit YAML
 * file; or LoraHub's composition of adapters, weighted to fit a few examples.
 *
 * <pre>{@code
 * Merging.Result merged = Merging.of(new MergeConfig(MergeMethod.LINEAR, null,
 *                 MergeConfig.models(List.of(first, second), List.of(0.7, 0.3)), MergeConfig.Parameters.none(),
 *                 null, null, null, null, Path.of("merged")))
 *         .run();
 * }</pre>
 *
 * <p>A config that contradicts itself is refused when built (IllegalArgumentException from {@link MergeConfig}); one
 * read from a file, LoraHub's inputs, and an input found unusable before anything is written (not a model, shapes or
 * tokenizers that differ, a non-empty out) throw {@link InvalidOptionException} naming it, which the command line
 * exits 2 with. The output is written as OUT.tmp-* and renamed when complete. Nothing prints.
 */
public final class Merging {
    private final MergeConfig config;
    private final LoraHubInputs loraHub;
    private boolean force;
    private int budget = LoraHub.DEFAULT_BUDGET;
    private long seed;
    private Quantization quantization = Quantization.NONE;
    private Device device;

    private record LoraHubInputs(Path base, List<Path> adapters, Path examples, Path out) {}

    private Merging(MergeConfig config, LoraHubInputs loraHub) {
        this.config = config;
        this.loraHub = loraHub;
    }

    /** A merge built in code; its record checked its own parameters against the method. */
    public static Merging of(MergeConfig config) {
        return new Merging(Objects.requireNonNull(config, "config"), null);
    }

    /**
     * A mergekit YAML file (merge_method, base_model, models or one slice, parameters, dtype, tokenizer_source, out).
     *
     * @param out the output directory, or null for the file's {@code out}
     * @throws InvalidOptionException what the file says that cannot be merged, at its line
     */
    public static Merging fromYaml(Path file, Path out) {
        try {
            return of(MergeYaml.read(file, out));
        } catch (IllegalArgumentException e) {
            throw new InvalidOptionException("config", e.getMessage(), e);
        }
    }

    /**
     * LoraHub (Huang et al. 2023): the weighted sum of {@code adapters} whose loss on the assistant tokens of
     * {@code examples} (a few chats of the new task), with the {@code base} model they were trained on, is least,
     * plus an L1 penalty; a gradient-free search of {@link #budget} loss evaluations from {@link #seed}.
     */
    public static Merging loraHub(Path base, List<Path> adapters, Path examples, Path out) {
        return new Merging(null, new LoraHubInputs(Objects.requireNonNull(base, "base"), List.copyOf(adapters),
                Objects.requireNonNull(examples, "examples"), Objects.requireNonNull(out, "out")));
    }

    /** Replace a non-empty output directory (never one that is, holds or lies inside an input). */
    public Merging force(boolean replace) {
        this.force = replace;
        return this;
    }

    /** LoraHub: loss evaluations of the search (default {@value LoraHub#DEFAULT_BUDGET}). */
    public Merging budget(int evaluations) {
        requireLoraHub("budget");
        this.budget = evaluations;
        return this;
    }

    /** LoraHub: the seed of the search (default 0). */
    public Merging seed(long value) {
        requireLoraHub("seed");
        this.seed = value;
        return this;
    }

    /** LoraHub: load the base's linear layers as NF4 (adapters trained with QLoRA), or as stored (default). */
    public Merging quantization(Quantization value) {
        requireLoraHub("quantization");
        this.quantization = Objects.requireNonNull(value, "quantization");
        return this;
    }

    /** LoraHub: where the base model runs; default: the GPU when libtorch has CUDA and sees one, else the CPU. */
    public Merging device(Device value) {
        requireLoraHub("device");
        this.device = value;
        return this;
    }

    private void requireLoraHub(String setting) {
        if (loraHub == null) {
            throw new IllegalStateException(setting + " applies to Merging.loraHub only; a MergeConfig says everything"
                    + " else");
        }
    }

    /**
     * What a merge wrote.
     *
     * @param method mergekit's name of the method (linear, ties, ...), or lorahub
     * @param members the merged inputs in order (a training run's checkpoints each, for swa, lawa and ema)
     * @param base the model task vectors were measured from (LoraHub: the model the adapters were scored with), or
     *     null
     * @param weights the weight each member got in the sum; empty for ties, dare and slerp
     * @param adapters whether the members were PEFT adapters (else full checkpoints)
     * @param report the merge's report (null for LoraHub)
     * @param loraHub LoraHub's search: each input's loss, the composed loss, evaluations (null for the others)
     * @param lines what {@code mixtune merge} prints
     */
    public record Result(Path out, String method, List<Path> members, Path base, double[] weights, boolean adapters,
            MergeReport report, LoraHub.Result loraHub, List<String> lines) {}

    public Result run() {
        if (loraHub != null) {
            LoraHub.Result result;
            try {
                result = LoraHubMerge.run(new LoraHubMerge.Request(loraHub.base(), loraHub.adapters(),
                        loraHub.examples(), loraHub.out(), force, new LoraHub.Settings(budget, seed),
                        quantization.linears(), device != null ? device : ComputeDevice.choose("auto")));
            } catch (IllegalArgumentException e) {
                throw new InvalidOptionException(null, e.getMessage(), e);
            }
            return new Result(loraHub.out(), "lorahub", result.inputs(), loraHub.base(), result.weights(), true, null,
                    result, result.lines(loraHub.out()));
        }
        MergeReport report;
        try {
            report = ModelMerge.run(config, force, RandomCheckpoint.DEFAULT_MAX_SHARD_BYTES);
        } catch (IllegalArgumentException e) {
            // ModelMerge checks every input before it writes (its contract): what it refuses is the user's to fix
            throw new InvalidOptionException(null, e.getMessage(), e);
        }
        return new Result(report.out(), report.method().yamlName(), report.inputs(), report.base(),
                report.coefficients(), report.adapters(), report, null, report.lines());
    }
}
