package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
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

    private final SafetensorsReader base;
    private final List<SafetensorsReader> models;
    private final List<TensorSpec> specs;
    private final Map<String, byte[]> keptRaw;

    private CheckpointMerge(SafetensorsReader base, List<SafetensorsReader> models, List<TensorSpec> specs,
            Map<String, byte[]> keptRaw) {
        this.base = base;
        this.models = models;
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
            requireSameConfig(inputs.get(0), configs.get(0), inputs.get(i), configs.get(i), identicalConfigs);
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
            List<SafetensorsReader> modelReaders = List.copyOf(readers.subList(base == null ? 0 : 1, readers.size()));
            return new CheckpointMerge(base == null ? null : readers.get(0), modelReaders, specs, keptRaw);
        } catch (RuntimeException e) {
            readers.forEach(SafetensorsReader::close);
            throw e;
        }
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
                float[] baseTensor = base == null ? null : base.readFloats(name);
                List<float[]> tensors = new ArrayList<>(models.size());
                for (SafetensorsReader model : models) {
                    tensors.add(model.readFloats(name));
                }
                return merge.merge(name, baseTensor, tensors);
            }

            @Override
            public byte[] rawBytes(TensorSpec spec) {
                return keptRaw.get(spec.name());
            }
        });
    }

    @Override
    public void close() {
        if (base != null) {
            base.close();
        }
        models.forEach(SafetensorsReader::close);
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

    private static void requireSameConfig(Path firstDir, JsonNode first, Path otherDir, JsonNode other, boolean all) {
        Set<String> keys = new TreeSet<>();
        if (all) {
            first.fieldNames().forEachRemaining(keys::add);
            other.fieldNames().forEachRemaining(keys::add);
            keys.removeAll(PROVENANCE_KEYS);
        } else {
            keys.addAll(ARCHITECTURE_KEYS);
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
        byte[] first = toArray(readers.get(0).bytes(name));
        for (int i = 1; i < readers.size(); i++) {
            if (!Arrays.equals(first, toArray(readers.get(i).bytes(name)))) {
                throw new IllegalArgumentException(readers.get(i).info(name).file() + ": tensor '" + name + "' is "
                        + readers.get(0).info(name).dtype() + ", which cannot be merged, and differs from "
                        + readers.get(0).info(name).file() + "; non-float tensors are kept only when every input"
                        + " has the same values");
            }
        }
        return first;
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
