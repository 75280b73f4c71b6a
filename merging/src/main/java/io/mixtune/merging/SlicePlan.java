package io.mixtune.merging;

import io.mixtune.merging.MergeConfig.Slice;
import io.mixtune.merging.MergeConfig.Source;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;

/**
 * mergekit's slices, planned as its MergePlanner plans them (plan.py): the output's decoder layers are the slices'
 * layers in order, numbered from 0; output layer k of a slice is merged from layer first + k of each of its sources
 * (layer_range [first, end), equally long within a slice), with the slice's parameters at t = k / (n - 1) for a slice
 * of n layers (t = 1 when n = 1). A layer's tensors are all those named {@code model.layers.N.*}, so a Mixtral layer
 * carries its router and every expert. The tensors outside the layers are mergekit's architecture files' "pre" and
 * "post" weights for Mistral and Mixtral: the embeddings from the first slice's sources, everything else (final norm,
 * lm_head) from the last slice's, each at t = 0 with that slice's parameters. Task-vector slices measure from the base
 * as the slice lists it (its own layer_range), as mergekit keys a slice's tensors by model.
 */
final class SlicePlan implements TensorMerge {
    /** One input tensor: which input (an index into the inputs), and its name there. */
    record Read(int input, String name) {}

    /** The inputs of one output tensor: the base's (or null) and the models'. */
    record Gather(Read base, List<Read> models) {}

    private final Map<String, Gather> gathers = new LinkedHashMap<>();
    private final Map<String, TensorMerge> merges = new LinkedHashMap<>();
    /**
     * The name each output tensor has in its slice's first source, which a method's random masks (dare, della:
     * {@link DareMask}) are drawn by: a slice stacked on others then draws the masks it draws merged alone
     * (SlicesInvariantTest), where the output's renumbered name would draw others.
     */
    private final Map<String, String> sourceNames = new LinkedHashMap<>();
    /** Each slice as a merge of whole models, with its parameters over the method-wide ones. */
    private final List<MergeConfig> views = new ArrayList<>();
    private int layers;

    private SlicePlan() {}

    /**
     * @param inputs the distinct models in order (the base among them where the slices list it), as opened
     * @param readers their tensors, in the same order
     */
    static SlicePlan plan(MergeConfig config, List<Path> inputs, List<SafetensorsReader> readers) {
        SlicePlan plan = new SlicePlan();
        List<Slice> slices = config.slices();
        for (int i = 0; i < slices.size(); i++) {
            plan.views.add(config.sliceView(i));
            for (int j = 0; j < slices.get(i).sources().size(); j++) {
                Source source = slices.get(i).sources().get(j);
                int modelLayers = LayerwiseMerge.layerCount(source.model());
                if (source.layerRange().get(1) > modelLayers) {
                    throw new IllegalArgumentException("slices[" + i + "].sources[" + j + "].layer_range "
                            + source.layerRange() + " reaches past the " + modelLayers + " layers of " + source.model());
                }
            }
        }
        SafetensorsReader first = readers.get(indexOf(inputs, slices.get(0).sources().get(0).model()));
        SafetensorsReader last = readers.get(indexOf(inputs, slices.get(slices.size() - 1).sources().get(0).model()));
        for (String name : first.names()) {
            if (isPreWeight(name)) {
                plan.add(config, 0, inputs, name, name, 0, 0, 0);
            }
        }
        for (int i = 0; i < slices.size(); i++) {
            Slice slice = slices.get(i);
            Source lead = slice.sources().get(0);
            SafetensorsReader leadReader = readers.get(indexOf(inputs, lead.model()));
            for (int k = 0; k < slice.length(); k++) {
                double t = slice.length() > 1 ? k / (double) (slice.length() - 1) : 1;
                boolean any = false;
                for (String name : leadReader.names()) {
                    if (layerOf(name) == lead.first() + k) {
                        plan.add(config, i, inputs, renumbered(name, plan.layers), name, lead.first(), k, t);
                        any = true;
                    }
                }
                if (!any) {
                    throw new IllegalArgumentException(lead.model() + ": has no tensors of layer " + (lead.first() + k)
                            + " (model.layers." + (lead.first() + k) + ".*), which slices[" + i + "] takes");
                }
                plan.layers++;
            }
        }
        for (String name : last.names()) {
            if (layerOf(name) < 0 && !isPreWeight(name)) {
                plan.add(config, slices.size() - 1, inputs, name, name, 0, 0, 0);
            }
        }
        return plan;
    }

    /**
     * Output tensor {@code name} of slice i from the tensor {@code leadName} (layer leadFirst + k of the slice's first
     * source, or outside the layers), read from each source at its own layer first + k.
     */
    private void add(MergeConfig config, int i, List<Path> inputs, String name, String leadName, int leadFirst, int k,
            double t) {
        Slice slice = config.slices().get(i);
        boolean layer = layerOf(leadName) >= 0;
        Read base = null;
        List<Read> models = new ArrayList<>();
        Path baseModel = config.baseModel();
        MergeMethod method = config.method();
        for (Source source : slice.sources()) {
            Read read = new Read(indexOf(inputs, source.model()),
                    layer ? renumbered(leadName, source.first() + k) : leadName);
            boolean isBase = baseModel != null && MergeConfig.samePath(source.model(), baseModel);
            if (isBase && method.takesBaseApart()) {
                base = read;
            } else if (isBase && method == MergeMethod.SLERP) {
                models.add(0, read);
            } else {
                models.add(read);
            }
        }
        gathers.put(name, new Gather(base, List.copyOf(models)));
        merges.put(name, ModelMerge.tensorMerge(views.get(i), name, t));
        sourceNames.put(name, layer ? renumbered(leadName, leadFirst + k) : leadName);
    }

    Map<String, Gather> gathers() {
        return gathers;
    }

    /** The output's number of decoder layers: the slices' lengths summed (mergekit's num_hidden_layers). */
    int layers() {
        return layers;
    }

    @Override
    public float[] merge(String name, float[] base, List<float[]> models) {
        return merges.get(name).merge(sourceNames.get(name), base, models);
    }

    @Override
    public float[] merge(String name, long[] shape, float[] base, List<float[]> models) {
        return merges.get(name).merge(sourceNames.get(name), shape, base, models);
    }

    /** mergekit's Mistral and Mixtral architectures have one "pre" weight, the embeddings. */
    private static boolean isPreWeight(String name) {
        return layerOf(name) < 0 && name.contains("embed_tokens");
    }

    private static int layerOf(String name) {
        Matcher layer = LayerwiseMerge.LAYER.matcher(name);
        return layer.find() ? Integer.parseInt(layer.group(1)) : -1;
    }

    private static String renumbered(String name, int layer) {
        Matcher m = LayerwiseMerge.LAYER.matcher(name);
        if (!m.find()) {
            throw new IllegalStateException(name + " is in no layer");
        }
        return name.substring(0, m.start(1)) + layer + name.substring(m.end(1));
    }

    private static int indexOf(List<Path> inputs, Path model) {
        for (int i = 0; i < inputs.size(); i++) {
            if (MergeConfig.samePath(inputs.get(i), model)) {
                return i;
            }
        }
        throw new IllegalStateException(model + " is none of the inputs " + inputs);
    }
}
