package io.mixtune.merging;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A merge whose parameters differ between tensors (mergekit's gradients and filtered values): each tensor is merged
 * with the values its name and layer give. mergekit evaluates a parameter at t = i / (L - 1) for the tensors of
 * decoder layer i of L (t = 1 when L = 1) and at t = 0 for the tensors outside the layers (embeddings, final norm,
 * lm_head), which it plans with the config reader it starts each module with.
 */
final class LayerwiseMerge implements TensorMerge {
    static final Pattern LAYER = Pattern.compile("(?:^|\\.)layers\\.(\\d+)\\.");

    /** The merge of one tensor from its name and layer position. */
    interface PerTensor {
        TensorMerge at(String tensorName, double t);
    }

    private final int layers;
    private final PerTensor perTensor;

    LayerwiseMerge(int layers, PerTensor perTensor) {
        this.layers = layers;
        this.perTensor = perTensor;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        return perTensor.at(name, layerPosition(name, layers)).merge(name, base, models);
    }

    @Override
    public float[] merge(String name, long[] shape, float[] base, List<float[]> models) {
        return perTensor.at(name, layerPosition(name, layers)).merge(name, shape, base, models);
    }

    /** mergekit's t for a tensor: i / (L - 1) inside decoder layer i of L (1 when L = 1), 0 outside the layers. */
    static double layerPosition(String tensorName, int layers) {
        Matcher layer = LAYER.matcher(tensorName);
        if (!layer.find()) {
            return 0;
        }
        return layers > 1 ? Integer.parseInt(layer.group(1)) / (double) (layers - 1) : 1;
    }

    /**
     * The models' num_hidden_layers, checked against the slice's layer_range (a range that cuts layers is merged as
     * a slice before this is asked); 0 when neither a gradient nor a layer_range needs it.
     */
    static int layerCount(Path model, List<Integer> layerRange, boolean layerwise) {
        if (layerRange == null && !layerwise) {
            return 0;
        }
        int layers = layerCount(model);
        if (layerRange != null && layerRange.get(1) != layers) {
            throw new IllegalStateException("layer_range " + layerRange + " is not every layer of the " + layers
                    + " of " + model + ": it is merged as a slice");
        }
        return layers;
    }

    /** A model's num_hidden_layers, which gradients are spread over and slices count in. */
    static int layerCount(Path model) {
        JsonNode layers = CheckpointMerge.readConfig(model).path("num_hidden_layers");
        if (!layers.canConvertToInt() || layers.asInt() <= 0) {
            throw new IllegalArgumentException(model.resolve(CheckpointMerge.CONFIG) + ": num_hidden_layers is missing;"
                    + " gradients and slices count layers, so their number is needed");
        }
        return layers.asInt();
    }
}
