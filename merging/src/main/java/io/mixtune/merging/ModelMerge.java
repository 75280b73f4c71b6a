package io.mixtune.merging;

import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.merging.MergeConfig.Model;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.IntStream;

/**
 * {@code mixtune merge}: resolves the inputs of a {@link MergeConfig} (training runs to their latest checkpoints), checks
 * every one, then merges full checkpoints ({@link CheckpointMerge}) or PEFT adapters ({@link AdapterAverage}) into a
 * staging directory that becomes {@code out} only when complete ({@link StagedOutput}). Nothing is written until all
 * inputs have passed their checks.
 */
public final class ModelMerge {
    private ModelMerge() {}

    /**
     * @param force replace a non-empty {@code out}
     * @param maxShardBytes shard size of a merged checkpoint (transformers' default is 5 GB)
     */
    public static MergeReport run(MergeConfig config, boolean force, long maxShardBytes) {
        long start = System.nanoTime();
        StagedOutput.requireWritable(config.out(), force);
        if (config.slices() != null) {
            return mergeSlices(config, force, maxShardBytes, start);
        }
        MergeConfig resolved = resolveInputs(config);
        List<Path> models = resolved.models().stream().map(Model::model).toList();
        Path base = resolved.baseModel();
        List<Path> all = new ArrayList<>(models);
        if (base != null) {
            all.add(0, base);
        }
        boolean adapters = isAdapter(all.get(0));
        for (Path input : all) {
            if (isAdapter(input) != adapters) {
                throw new IllegalArgumentException(input + ": is a " + (adapters ? "model" : "PEFT adapter") + " but "
                        + all.get(0) + " is a " + (adapters ? "PEFT adapter" : "model") + ": merge adapters with"
                        + " adapters and models with models");
            }
        }
        MergeMethod method = resolved.method();
        boolean warm = method == MergeMethod.WARM;
        boolean layerwise = resolved.variesByTensor();
        double[] coefficients = layerwise ? new double[0] : coefficients(resolved, "", 0);
        if (adapters && layerwise) {
            throw new IllegalArgumentException("gradients and filtered parameters are not supported yet for PEFT"
                    + " adapters: give each parameter one number, or merge the checkpoints they were merged into");
        }
        if (adapters && resolved.tokenizerSource() != null) {
            throw new IllegalArgumentException("tokenizer_source applies to models; PEFT adapters carry no tokenizer");
        }
        if (adapters && resolved.layerRange() != null) {
            throw new IllegalArgumentException("slices (layer_range) apply to models, not PEFT adapters");
        }
        if (adapters) {
            return mergeAdapters(resolved, models, coefficients, force, start);
        }
        if (method.needsBase() && base == null) {
            throw new IllegalArgumentException(method.yamlName() + " measures task vectors from base_model, which is"
                    + " missing (only PEFT adapters, task vectors already, need none)");
        }
        if (resolved.rank() != null) {
            throw new IllegalArgumentException("rank re-compresses PEFT adapters, but the inputs are full checkpoints");
        }
        // linear's base_model is one of its models, as in mergekit: averaged with them, and the config's donor.
        Path tensorBase = method.takesBaseApart() ? base : null;
        List<Path> tensorModels = method == MergeMethod.SLERP ? slerpEnds(base, models) : models;
        if (method == MergeMethod.KARCHER && base != null && models.stream().noneMatch(m -> MergeConfig.samePath(m, base))) {
            // mergekit's karcher averages the base as one more model (normalize_config lists it among the sources).
            tensorModels = new ArrayList<>(models);
            tensorModels.add(base);
        }
        List<Path> priority = new ArrayList<>(tensorModels);
        if (base != null) {
            priority.add(0, base);
        }
        if (resolved.layerRange() != null && !adapters
                && resolved.layerRange().get(1) != LayerwiseMerge.layerCount(tensorModels.get(0))) {
            return mergeSlices(resolved.asOneSlice(), force, maxShardBytes, start);
        }
        int layers = LayerwiseMerge.layerCount(tensorModels.get(0), resolved.layerRange(), layerwise);
        TensorMerge merge = layerwise
                ? new LayerwiseMerge(layers, (name, t) -> tensorMerge(resolved, name, t))
                : tensorMerge(resolved, "", 0);
        Path tokenizerSource = resolved.tokenizerSource() == null ? null : resolved.tokenizerInput();
        String chatTemplate = MergedChatTemplate.settle(resolved.chatTemplate(), MergedChatTemplate.inputs(resolved),
                CompanionFiles.tokenizerDonors(priority, tokenizerSource));
        try (CheckpointMerge checkpoints = CheckpointMerge.open(tensorBase, tensorModels, warm, resolved.writtenDtype(),
                priority.get(0), tokenizerSource);
                StagedOutput staged = StagedOutput.create(config.out(), force)) {
            List<Path> files = checkpoints.write(merge, staged.dir(), maxShardBytes);
            CompanionFiles.copy(priority, staged.dir(), tokenizerSource);
            writeChatTemplate(chatTemplate, staged.dir());
            CheckpointMerge.recordDtype(staged.dir(), resolved.writtenDtype());
            writeResolved(resolved, staged.dir());
            staged.commit();
            return new MergeReport(method, false, tensorModels, tensorBase, config.out(), checkpoints.tensorCount(),
                    coefficients,
                    files.size(), seconds(start), 0, 0, 0);
        }
    }

    /**
     * mergekit's slices ({@link SlicePlan}): layer ranges cut and stacked, the config.json of the base (else of the
     * first slice's first source) with num_hidden_layers set to the layers written.
     */
    private static MergeReport mergeSlices(MergeConfig config, boolean force, long maxShardBytes, long start) {
        if (config.rank() != null) {
            throw new IllegalArgumentException("rank re-compresses PEFT adapters, but slices merge full checkpoints");
        }
        List<Path> inputs = config.models().stream().map(Model::model).toList();
        inputs.forEach(ModelMerge::requireExists);
        for (Path input : inputs) {
            if (isAdapter(input)) {
                throw new IllegalArgumentException(input + ": is a PEFT adapter; slices (layer_range) apply to models");
            }
        }
        Path donor = config.baseModel() != null ? config.baseModel()
                : config.slices().get(0).sources().get(0).model();
        List<Path> priority = new ArrayList<>(inputs);
        priority.removeIf(p -> MergeConfig.samePath(p, donor));
        priority.add(0, donor);
        Path tokenizerSource = config.tokenizerSource() == null ? null : config.tokenizerInput();
        String chatTemplate = MergedChatTemplate.settle(config.chatTemplate(), MergedChatTemplate.inputs(config),
                CompanionFiles.tokenizerDonors(priority, tokenizerSource));
        CheckpointMerge.Planned opened = CheckpointMerge.openSlices(config, config.writtenDtype(), tokenizerSource);
        try (CheckpointMerge checkpoints = opened.checkpoints();
                StagedOutput staged = StagedOutput.create(config.out(), force)) {
            List<Path> files = checkpoints.write(opened.plan(), staged.dir(), maxShardBytes);
            CompanionFiles.copy(priority, staged.dir(), tokenizerSource);
            writeChatTemplate(chatTemplate, staged.dir());
            CheckpointMerge.recordLayers(staged.dir(), opened.plan().layers());
            CheckpointMerge.recordDtype(staged.dir(), config.writtenDtype());
            writeResolved(config, staged.dir());
            staged.commit();
            return new MergeReport(config.method(), false, inputs, config.baseModel(), config.out(),
                    checkpoints.tensorCount(), new double[0], files.size(), seconds(start), 0, 0, 0);
        }
    }

    private static MergeReport mergeAdapters(MergeConfig resolved, List<Path> models, double[] coefficients,
            boolean force, long start) {
        MergeMethod method = resolved.method();
        if (method.family() != MergeMethod.Family.AVERAGE && method != MergeMethod.TASK_ARITHMETIC) {
            throw new IllegalArgumentException(method.yamlName() + " on PEFT adapters is not supported: "
                    + (method == MergeMethod.SLERP ? "interpolating on the sphere"
                    : method == MergeMethod.MODEL_STOCK ? "the angle between task vectors"
                    : method.family() == MergeMethod.Family.SPHERICAL ? "interpolating on the sphere"
                    : method == MergeMethod.NEARSWAP || method == MergeMethod.ARCEE_FUSION
                    ? "comparing entries with the base's"
                    : method == MergeMethod.KARCHER ? "averaging on the sphere"
                    : method == MergeMethod.PASSTHROUGH ? "copying layers" : "trimming and sign election")
                    + " act on the dense delta B A, which is no longer low-rank; fold each adapter into its base"
                    + " (mixtune merge-adapter) and merge the checkpoints, or use linear, ema or task_arithmetic");
        }
        if (resolved.baseModel() != null) {
            throw new IllegalArgumentException("adapters are task vectors already: give no base_model when merging"
                    + " PEFT adapters");
        }
        String chatTemplate = MergedChatTemplate.settle(resolved.chatTemplate(), models, models);
        try (AdapterAverage average = AdapterAverage.open(models, method == MergeMethod.WARM);
                StagedOutput staged = StagedOutput.create(resolved.out(), force)) {
            AdapterAverage.Compression compression = average.write(coefficients, resolved.rank(), resolved.writtenDtype(),
                    staged.dir());
            CompanionFiles.copyTokenizer(models, staged.dir());
            writeChatTemplate(chatTemplate, staged.dir());
            writeResolved(resolved, staged.dir());
            staged.commit();
            return new MergeReport(method, true, models, null, resolved.out(), compression.modules(), coefficients, 2,
                    seconds(start), compression.compressed(), compression.maxError(), compression.meanError());
        }
    }

    /**
     * The template {@link MergedChatTemplate#settle} settled, into the copied tokenizer files; null (no chat_template,
     * or auto finding none) leaves them as they are.
     */
    private static void writeChatTemplate(String template, Path out) {
        if (template != null) {
            MergedChatTemplate.write(out, template);
        }
    }

    /** Run directories become their checkpoints, oldest first; {@code last} keeps the latest k of all inputs. */
    static MergeConfig resolveInputs(MergeConfig config) {
        List<Model> expanded = new ArrayList<>();
        for (Model model : config.models()) {
            requireExists(model.model());
            if (RunCheckpoints.isRun(model.model())) {
                MergeMethod method = config.method();
                if (method != MergeMethod.SWA && method != MergeMethod.LAWA && method != MergeMethod.EMA) {
                    throw new IllegalArgumentException(model.model() + ": is a training run (checkpoints/step-N): only"
                            + " swa, lawa and ema take one; " + method.yamlName() + " takes model directories");
                }
                RunCheckpoints.all(model.model()).forEach(c -> expanded.add(Model.of(c.dir())));
            } else {
                expanded.add(model);
            }
        }
        if (config.baseModel() != null) {
            requireExists(config.baseModel());
        }
        Integer last = config.last();
        if (last != null && last > expanded.size()) {
            throw new IllegalArgumentException("last is " + last + " but there are only " + expanded.size()
                    + " checkpoints: " + expanded.stream().map(m -> m.model().toString()).toList());
        }
        List<Model> kept = last == null ? expanded : expanded.subList(expanded.size() - last, expanded.size());
        if (config.method().takesBaseApart() && config.baseModel() != null && kept.size() > 1) {
            // mergekit lists the base among the models at will and skips it: its task vector is zero, and its weight
            // must not count when normalising.
            kept = kept.stream().filter(m -> !MergeConfig.samePath(m.model(), config.baseModel())).toList();
        }
        MergeConfig resolved = config.withModels(kept);
        if (resolved.method() == MergeMethod.SLERP) {
            slerpEnds(resolved.baseModel(), kept.stream().map(Model::model).toList());
        }
        return resolved;
    }

    /** How one tensor, at layer position t, is merged: the method with the parameters that tensor gets. */
    static TensorMerge tensorMerge(MergeConfig config, String name, double t) {
        MergeMethod method = config.method();
        int n = config.models().size();
        if (method == MergeMethod.PASSTHROUGH) {
            return new Passthrough(config.scaleOf(0, name, t));
        }
        if (method == MergeMethod.SLERP) {
            return new Slerp(config.t(name, t));
        }
        if (method == MergeMethod.MODEL_STOCK) {
            return new ModelStock(config.filterWise());
        }
        if (method == MergeMethod.NEARSWAP) {
            return new NearSwap(config.t(name, t));
        }
        if (method == MergeMethod.NUSLERP) {
            return new NuSlerp(config.weightOf(0, name, t), config.weightOf(1, name, t), config.nuslerpFlatten(),
                    config.nuslerpRowWise());
        }
        if (method == MergeMethod.KARCHER) {
            return new Karcher(config.maxIter(), config.tol());
        }
        if (method == MergeMethod.SCE) {
            return new Sce(config.selectTopk(name, t));
        }
        if (method == MergeMethod.ARCEE_FUSION) {
            return new ArceeFusion();
        }
        if (method == MergeMethod.RAM || method == MergeMethod.RAMPLUS_TL) {
            return new Ram(config.ramEpsilon(name, t), method == MergeMethod.RAMPLUS_TL, config.ramR(name, t),
                    config.ramAlpha(name, t));
        }
        if (method == MergeMethod.MULTISLERP) {
            return new MultiSlerp(IntStream.range(0, n).mapToDouble(i -> config.weightOf(i, name, t)).toArray(),
                    config.normalizeWeights());
        }
        if (method.needsBase()) {
            return new TaskArithmetic(method, IntStream.range(0, n).mapToDouble(i -> config.weightOf(i, name, t)).toArray(),
                    IntStream.range(0, n).mapToDouble(i -> config.densityOf(i, name, t)).toArray(), config.normalize(),
                    config.lambda(name, t), config.rescale(), config.seedOrDefault(),
                    IntStream.range(0, n).mapToDouble(i -> config.gammaOf(i, name, t)).toArray(),
                    IntStream.range(0, n).mapToDouble(i -> config.epsilonOf(i, name, t)).toArray());
        }
        return new WeightedAverage(coefficients(config, name, t));
    }

    /**
     * The weight of each input in the sum for a tensor at layer position t; empty for the methods that do not merge by
     * fixed weights.
     */
    static double[] coefficients(MergeConfig config, String name, double t) {
        int n = config.models().size();
        List<Double> weights = IntStream.range(0, n).mapToObj(i -> config.weightOf(i, name, t)).toList();
        return switch (config.method()) {
            case LINEAR -> WeightedAverage.coefficients(weights, config.normalize());
            case SWA, LAWA, WARM -> WeightedAverage.coefficients(java.util.Collections.nCopies(n, 1.0), true);
            case EMA -> WeightedAverage.emaCoefficients(n, config.parameters().decay());
            case TASK_ARITHMETIC -> Arrays.stream(WeightedAverage.coefficients(weights, config.normalize()))
                    .map(c -> c * config.lambda(name, t)).toArray();
            default -> new double[0];
        };
    }

    /** slerp's x0 and x1: base_model (if given) then the other model; else the two models in order. */
    private static List<Path> slerpEnds(Path base, List<Path> models) {
        if (base == null) {
            return models;
        }
        List<Path> others = models.stream().filter(m -> !MergeConfig.samePath(m, base)).toList();
        if (others.size() != 1) {
            throw new IllegalArgumentException("slerp interpolates from base_model to one other model, got "
                    + others.size() + " others: " + others);
        }
        return List.of(base, others.get(0));
    }

    private static boolean isAdapter(Path dir) {
        if (Files.isRegularFile(dir.resolve(PeftAdapter.CONFIG_FILE))) {
            return true;
        }
        if (Files.isRegularFile(dir.resolve(CheckpointMerge.CONFIG))) {
            return false;
        }
        throw new IllegalArgumentException(dir + ": neither a model (" + CheckpointMerge.CONFIG + " and *.safetensors)"
                + " nor a PEFT adapter (" + PeftAdapter.CONFIG_FILE + " and " + PeftAdapter.WEIGHTS_FILE + ")");
    }

    private static void requireExists(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new IllegalArgumentException(dir + ": no such directory");
        }
    }

    private static void writeResolved(MergeConfig resolved, Path dir) {
        try {
            MergeYaml.write(resolved, dir.resolve(MergeYaml.RESOLVED_FILE));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + dir.resolve(MergeYaml.RESOLVED_FILE) + ": " + e.getMessage(), e);
        }
    }

    private static double seconds(long start) {
        return (System.nanoTime() - start) / 1e9;
    }
}
