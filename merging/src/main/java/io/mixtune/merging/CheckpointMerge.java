package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.merging.SlicePlan.Gather;
import io.mixtune.merging.SlicePlan.Read;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.DType;
import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import io.mixtune.model.safetensors.SafetensorsWriter.TensorSpec;
import io.mixtune.model.safetensors.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * Merges full Hugging Face checkpoints tensor by tensor: for each output tensor the same-named tensor is read from every
 * input (memory-mapped, any shard), converted to float32, merged, and handed to the streaming writer, so memory holds
 * about one tensor per input and never a whole model. Opening checks everything that could fail later (configs,
 * tokenizers, tensor names, shapes, non-float tensors) so that a bad input fails before anything is written. Inputs
 * may differ in dtype, as mergekit casts every tensor on load: all are computed in float32.
 */
final class CheckpointMerge implements AutoCloseable {
    static final String CONFIG = "config.json";

    /** config.json keys that say what the architecture is and what shapes it has; they must agree across inputs. */
    private static final List<String> ARCHITECTURE_KEYS = List.of("model_type", "architectures", "hidden_size",
            "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
            "vocab_size", "num_local_experts", "num_experts_per_tok", "tie_word_embeddings");

    /** Keys that record where and with what a config was saved, not the model; WARM ignores only these. */
    private static final Set<String> PROVENANCE_KEYS = Set.of("_name_or_path", "transformers_version");

    private final List<SafetensorsReader> readers;
    private final Map<String, Gather> gathers;
    private final List<TensorSpec> specs;
    private final Map<String, byte[]> keptRaw;

    private CheckpointMerge(List<SafetensorsReader> readers, Map<String, Gather> gathers, List<TensorSpec> specs,
            Map<String, byte[]> keptRaw) {
        this.readers = readers;
        this.gathers = gathers;
        this.specs = specs;
        this.keptRaw = keptRaw;
    }

    /**
     * @param base the base model (task-vector methods) or null
     * @param identicalConfigs WARM: every config key must agree, not only the architecture's
     * @param dtype the output dtype, or null for the dtype each tensor has in {@code donor}
     * @param donor the input whose config.json the merge carries (the base, else the first model): with no dtype its
     *     tensors' dtypes are the output's, as mergekit writes the base's (task vectors, slerp), so that the config
     *     tells the truth
     * @param tokenizerSource mergekit's tokenizer_source, or null: see {@link CompanionFiles#requireSameTokenizer}
     */
    static CheckpointMerge open(Path base, List<Path> models, boolean identicalConfigs, DType dtype, Path donor,
            Path tokenizerSource) {
        List<Path> inputs = new ArrayList<>();
        if (base != null) {
            inputs.add(base);
        }
        inputs.addAll(models);
        List<JsonNode> configs = inputs.stream().map(CheckpointMerge::readConfig).toList();
        for (int i = 1; i < inputs.size(); i++) {
            requireSameConfig(inputs.get(0), configs.get(0), inputs.get(i), configs.get(i), identicalConfigs, false);
        }
        CompanionFiles.requireSameTokenizer(inputs, tokenizerSource);
        int donorIndex = 0;
        while (donorIndex < inputs.size() && !MergeConfig.samePath(inputs.get(donorIndex), donor)) {
            donorIndex++;
        }
        if (donorIndex == inputs.size()) {
            throw new IllegalArgumentException("the config donor " + donor + " is none of the inputs " + inputs);
        }
        List<SafetensorsReader> readers = new ArrayList<>();
        try {
            for (Path input : inputs) {
                readers.add(SafetensorsReader.open(input));
            }
            Map<String, byte[]> keptRaw = new LinkedHashMap<>();
            List<TensorSpec> specs = plan(inputs, readers, dtype, readers.get(donorIndex), keptRaw);
            Map<String, Gather> gathers = new LinkedHashMap<>();
            int first = base == null ? 0 : 1;
            for (TensorSpec spec : specs) {
                List<Read> reads = new ArrayList<>();
                for (int i = first; i < readers.size(); i++) {
                    reads.add(new Read(i, spec.name()));
                }
                gathers.put(spec.name(), new Gather(base == null ? null : new Read(0, spec.name()), reads));
            }
            return new CheckpointMerge(readers, gathers, specs, keptRaw);
        } catch (RuntimeException e) {
            readers.forEach(SafetensorsReader::close);
            throw e;
        }
    }

    /**
     * The inputs of a slices merge ({@link SlicePlan}): the same architecture apart from the number of layers, which
     * the plan checks against every layer_range; each output tensor read from its sources by their own names.
     *
     * @param dtype the output dtype, or null for the dtype each tensor has in its first source (the base's, where the
     *     slice merges task vectors)
     * @return the merge and its plan (the {@link TensorMerge} to write with)
     */
    static Planned openSlices(MergeConfig config, DType dtype, Path tokenizerSource) {
        List<Path> inputs = config.models().stream().map(MergeConfig.Model::model).toList();
        List<JsonNode> configs = inputs.stream().map(CheckpointMerge::readConfig).toList();
        for (int i = 1; i < inputs.size(); i++) {
            requireSameConfig(inputs.get(0), configs.get(0), inputs.get(i), configs.get(i), false, true);
        }
        CompanionFiles.requireSameTokenizer(inputs, tokenizerSource);
        List<SafetensorsReader> readers = new ArrayList<>();
        try {
            for (Path input : inputs) {
                readers.add(SafetensorsReader.open(input));
            }
            SlicePlan plan = SlicePlan.plan(config, inputs, readers);
            List<TensorSpec> specs = new ArrayList<>();
            Map<String, byte[]> keptRaw = new LinkedHashMap<>();
            for (Map.Entry<String, Gather> entry : plan.gathers().entrySet()) {
                String name = entry.getKey();
                List<Read> reads = new ArrayList<>();
                if (entry.getValue().base() != null) {
                    reads.add(entry.getValue().base());
                }
                reads.addAll(entry.getValue().models());
                TensorInfo first = info(readers, inputs, reads.get(0));
                for (Read read : reads.subList(1, reads.size())) {
                    TensorInfo other = info(readers, inputs, read);
                    if (!Arrays.equals(first.shape(), other.shape())) {
                        throw new IllegalArgumentException(other.file() + ": tensor '" + read.name() + "' has shape "
                                + Arrays.toString(other.shape()) + " but '" + reads.get(0).name() + "' has "
                                + Arrays.toString(first.shape()) + " in " + first.file() + ", and the slice merges the"
                                + " two into '" + name + "'");
                    }
                    if (first.dtype().isFloat32Convertible() != other.dtype().isFloat32Convertible()) {
                        throw new IllegalArgumentException(other.file() + ": tensor '" + read.name() + "' is "
                                + other.dtype() + " but " + first.dtype() + " in " + first.file());
                    }
                }
                if (first.dtype().isFloat32Convertible()) {
                    specs.add(new TensorSpec(name, dtype == null ? first.dtype() : dtype, first.shape()));
                } else {
                    keptRaw.put(name, identicalRawBytes(reads, inputs, readers));
                    specs.add(new TensorSpec(name, first.dtype(), first.shape()));
                }
            }
            return new Planned(new CheckpointMerge(readers, plan.gathers(), specs, keptRaw), plan);
        } catch (RuntimeException e) {
            readers.forEach(SafetensorsReader::close);
            throw e;
        }
    }

    /** A slices merge opened: its inputs and its plan, which merges each tensor as its slice says. */
    record Planned(CheckpointMerge checkpoints, SlicePlan plan) {}

    private static TensorInfo info(List<SafetensorsReader> readers, List<Path> inputs, Read read) {
        SafetensorsReader reader = readers.get(read.input());
        if (!reader.contains(read.name())) {
            throw new IllegalArgumentException(inputs.get(read.input()) + ": has no tensor '" + read.name() + "', which"
                    + " the slices take from it: the models have different architectures");
        }
        return reader.info(read.name());
    }

    int tensorCount() {
        return specs.size();
    }

    /** Writes the merged weights into {@code dir} (sharded past {@code maxShardBytes}); returns the files. */
    List<Path> write(TensorMerge merge, Path dir, long maxShardBytes) {
        return SafetensorsWriter.writeCheckpoint(dir, specs, maxShardBytes, new SafetensorsWriter.TensorSource() {
            @Override
            public float[] floats(TensorSpec spec) {
                String name = spec.name();
                Gather gather = gathers.get(name);
                float[] baseTensor = gather.base() == null ? null : read(gather.base());
                List<float[]> tensors = new ArrayList<>(gather.models().size());
                for (Read model : gather.models()) {
                    tensors.add(read(model));
                }
                return merge.merge(name, spec.shape(), baseTensor, tensors);
            }

            @Override
            public byte[] rawBytes(TensorSpec spec) {
                return keptRaw.get(spec.name());
            }
        });
    }

    private float[] read(Read read) {
        return readers.get(read.input()).readFloats(read.name());
    }

    @Override
    public void close() {
        readers.forEach(SafetensorsReader::close);
    }

    static JsonNode readConfig(Path dir) {
        Path file = dir.resolve(CONFIG);
        try {
            JsonNode json = new ObjectMapper().readTree(Files.readString(file));
            if (!(json instanceof ObjectNode)) {
                throw new IllegalArgumentException(file + ": expected a JSON object");
            }
            return json;
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(file + ": missing; a Hugging Face model directory holds " + CONFIG
                    + " and its *.safetensors");
        } catch (IOException e) {
            throw new IllegalArgumentException(file + ": not valid JSON: " + e.getMessage());
        }
    }

    /** @param layersMayDiffer slices take layer ranges, so the models' numbers of layers need not agree */
    private static void requireSameConfig(Path firstDir, JsonNode first, Path otherDir, JsonNode other, boolean all,
            boolean layersMayDiffer) {
        Set<String> keys = new TreeSet<>();
        if (all) {
            first.fieldNames().forEachRemaining(keys::add);
            other.fieldNames().forEachRemaining(keys::add);
            keys.removeAll(PROVENANCE_KEYS);
        } else {
            keys.addAll(ARCHITECTURE_KEYS);
        }
        if (layersMayDiffer) {
            keys.remove("num_hidden_layers");
        }
        for (String key : keys) {
            JsonNode a = first.path(key);
            JsonNode b = other.path(key);
            if (!a.equals(b)) {
                throw new IllegalArgumentException(otherDir.resolve(CONFIG) + ": " + key + " is " + shown(b) + " but "
                        + shown(a) + " in " + firstDir.resolve(CONFIG) + (all
                        ? ": warm averages models fine-tuned from one initialisation with one config"
                        : ": the models have different architectures"));
            }
        }
    }

    private static String shown(JsonNode node) {
        return node.isMissingNode() ? "absent" : node.toString();
    }

    private static List<TensorSpec> plan(List<Path> inputs, List<SafetensorsReader> readers, DType dtype,
            SafetensorsReader donor, Map<String, byte[]> keptRaw) {
        SafetensorsReader reference = readers.get(0);
        for (int i = 1; i < readers.size(); i++) {
            requireSameNames(inputs.get(0), reference.names(), inputs.get(i), readers.get(i).names());
        }
        List<TensorSpec> specs = new ArrayList<>();
        for (String name : reference.names()) {
            TensorInfo first = reference.info(name);
            for (int i = 1; i < readers.size(); i++) {
                TensorInfo other = readers.get(i).info(name);
                if (!Arrays.equals(first.shape(), other.shape())) {
                    throw new IllegalArgumentException(other.file() + ": tensor '" + name + "' has shape "
                            + Arrays.toString(other.shape()) + " but " + Arrays.toString(first.shape()) + " in "
                            + first.file() + ": the models have different architectures");
                }
                boolean bothFloat = first.dtype().isFloat32Convertible() && other.dtype().isFloat32Convertible();
                if (first.dtype() != other.dtype() && !bothFloat) {
                    throw new IllegalArgumentException(other.file() + ": tensor '" + name + "' is " + other.dtype()
                            + " but " + first.dtype() + " in " + first.file() + ": float tensors of any dtype are"
                            + " merged in float32, other tensors are kept only when every input has the same");
                }
            }
            if (first.dtype().isFloat32Convertible()) {
                specs.add(new TensorSpec(name, dtype == null ? donor.info(name).dtype() : dtype, first.shape()));
            } else {
                keptRaw.put(name, identicalRawBytes(name, inputs, readers));
                specs.add(new TensorSpec(name, first.dtype(), first.shape()));
            }
        }
        return specs;
    }

    /** A non-float tensor (an int buffer, say) cannot be averaged; it is kept if every input has the same bytes. */
    private static byte[] identicalRawBytes(String name, List<Path> inputs, List<SafetensorsReader> readers) {
        List<Read> reads = new ArrayList<>();
        for (int i = 0; i < readers.size(); i++) {
            reads.add(new Read(i, name));
        }
        return identicalRawBytes(reads, inputs, readers);
    }

    private static byte[] identicalRawBytes(List<Read> reads, List<Path> inputs, List<SafetensorsReader> readers) {
        Read first = reads.get(0);
        byte[] firstBytes = toArray(readers.get(first.input()).bytes(first.name()));
        TensorInfo firstInfo = readers.get(first.input()).info(first.name());
        for (Read read : reads.subList(1, reads.size())) {
            if (!Arrays.equals(firstBytes, toArray(readers.get(read.input()).bytes(read.name())))) {
                throw new IllegalArgumentException(readers.get(read.input()).info(read.name()).file() + ": tensor '"
                        + read.name() + "' is " + firstInfo.dtype() + ", which cannot be merged, and differs from "
                        + firstInfo.file() + "; non-float tensors are kept only when every input has the same values");
            }
        }
        return firstBytes;
    }

    private static byte[] toArray(ByteBuffer buffer) {
        byte[] bytes = new byte[buffer.remaining()];
        buffer.get(bytes);
        return bytes;
    }

    private static void requireSameNames(Path firstDir, Set<String> first, Path otherDir, Set<String> other) {
        if (first.equals(other)) {
            return;
        }
        Set<String> missing = new TreeSet<>(first);
        missing.removeAll(other);
        Set<String> extra = new TreeSet<>(other);
        extra.removeAll(first);
        throw new IllegalArgumentException(otherDir + ": its tensors differ from " + firstDir + "'s: "
                + (missing.isEmpty() ? "" : "missing " + abbreviate(missing) + (extra.isEmpty() ? "" : ", "))
                + (extra.isEmpty() ? "" : "extra " + abbreviate(extra)) + ": the models have different architectures");
    }

    private static String abbreviate(Set<String> names) {
        Iterator<String> it = names.iterator();
        List<String> shown = new ArrayList<>();
        while (it.hasNext() && shown.size() < 3) {
            shown.add(it.next());
        }
        return names.size() + " (" + String.join(", ", shown) + (names.size() > 3 ? ", ..." : "") + ")";
    }

    /** Records the output's number of decoder layers in the copied config.json, as mergekit does for slices. */
    static void recordLayers(Path dir, int layers) {
        Path file = dir.resolve(CONFIG);
        try {
            ObjectMapper json = new ObjectMapper();
            ObjectNode config = (ObjectNode) json.readTree(file.toFile());
            config.put("num_hidden_layers", layers);
            json.writerWithDefaultPrettyPrinter().writeValue(file.toFile(), config);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot update " + file + ": " + e.getMessage(), e);
        }
    }

    /** Records the output dtype in the copied config.json when the weights were converted. */
    static void recordDtype(Path dir, DType dtype) {
        if (dtype == null || !Files.isRegularFile(dir.resolve(CONFIG))) {
            return;
        }
        try {
            ModelConfig.recordDtype(dir.resolve(CONFIG), dtype);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot update " + dir.resolve(CONFIG) + ": " + e.getMessage(), e);
        }
    }
}
