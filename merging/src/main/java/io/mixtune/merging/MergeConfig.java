package io.mixtune.merging;

import com.fasterxml.jackson.annotation.JsonCreator;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.annotation.JsonProperty;
import io.mixtune.model.checkpoint.PathOverlap;
import io.mixtune.model.safetensors.DType;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * What {@code mixtune merge} does, as a mergekit-style YAML file says it (one key per component; the command-line
 * options {@code --method --inputs --weights --base --density --t ...} fill the same record):
 * <pre>
 *   merge_method: ties              # linear swa lawa ema warm task_arithmetic ties dare_linear dare_ties slerp
 *                                   # ... every mergekit method: see {@link MergeMethod}
 *   base_model: base/               # task vectors are measured from it (task_arithmetic, ties, dare_*); slerp: x0
 *   models:
 *     - model: math/
 *       parameters: {weight: 1.0, density: 0.5}
 *     - model: code/                # parameters default to the method-wide ones below
 *   parameters: {normalize: true, lambda: 1.0, density: 0.7, weight: 1.0, t: 0.5, decay: 0.9, rescale: true}
 *   last: 5                         # swa, lawa, ema: the latest 5 checkpoints (of a run directory, or of models)
 *   rank: 16                        # PEFT adapters: re-compress the concatenated ranks to 16 by SVD
 *   seed: 0                         # dare_*: seeds the drop masks
 *   dtype: bfloat16                 # default: the base's (or first model's) dtype
 *   out_dtype: bfloat16             # written in out_dtype where given, else dtype (computed in float32 anyway)
 *   tokenizer_source: base          # or one of the models: whose tokenizer files the merge carries
 *   chat_template: auto             # or a Jinja template: written into the merged tokenizer (chat_template.jinja)
 *   out: merged/                    # or on the command line: mixtune merge merge.yaml merged/
 * </pre>
 * weight, density, lambda and t may also be mergekit's gradients ({@code [0, 0.5, 1]}, spread over the layers) or
 * filtered lists ({@code [{filter: mlp, value: 0.5}, {value: 0}]}): see {@link ParameterSetting}. mergekit's
 * {@code slices} form is read as the {@code models} form when there is one slice whose sources all span the same
 * layers, recorded in {@code layer_range}; other slices (cut or stacked layer ranges) are kept as {@code slices}, with
 * {@code models} listing their models once each, in order of appearance ({@link SlicePlan}).
 * Paths are taken relative to the working directory, as mergekit takes them. Everything that can be checked without
 * opening a model is checked here, with the YAML key in the message.
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
public record MergeConfig(
        @JsonProperty("merge_method") MergeMethod method,
        @JsonProperty("base_model") Path baseModel,
        @JsonProperty("models") List<Model> models,
        @JsonProperty("parameters") Parameters parameters,
        @JsonProperty("last") Integer last,
        @JsonProperty("rank") Integer rank,
        @JsonProperty("seed") Long seed,
        @JsonProperty("dtype") DType dtype,
        @JsonProperty("out_dtype") DType outDtype,
        @JsonProperty("tokenizer_source") Path tokenizerSource,
        @JsonProperty("chat_template") String chatTemplate,
        @JsonProperty("layer_range") List<Integer> layerRange,
        @JsonProperty("slices") List<Slice> slices,
        @JsonProperty("out") Path out) {

    /** One input: a model directory, a PEFT adapter directory, or (swa, lawa, ema) a training run directory. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Model(@JsonProperty("model") Path model, @JsonProperty("parameters") ModelParameters parameters) {
        public Model {
            if (model == null) {
                throw new IllegalArgumentException("model is missing: each entry of models names a directory");
            }
            parameters = parameters == null ? new ModelParameters((ParameterSetting) null, null) : parameters;
        }

        public static Model of(Path model) {
            return new Model(model, null);
        }
    }

    /**
     * A model's own weight, density and (passthrough) scale; null takes the slice's, then the method-wide value from
     * {@link Parameters}.
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record ModelParameters(@JsonProperty("weight") ParameterSetting weight,
            @JsonProperty("density") ParameterSetting density, @JsonProperty("scale") ParameterSetting scale,
            @JsonProperty("gamma") ParameterSetting gamma, @JsonProperty("epsilon") ParameterSetting epsilon) {
        @JsonCreator
        public ModelParameters {
            requireDensity(density);
            requireFinite("weight", weight);
            requireFinite("scale", scale);
            requireGamma(gamma);
            requireEpsilon(epsilon);
        }

        public ModelParameters(ParameterSetting weight, ParameterSetting density) {
            this(weight, density, null, null, null);
        }

        /** One number each, as the command line gives them. */
        public ModelParameters(Double weight, Double density) {
            this(ParameterSetting.of(weight), ParameterSetting.of(density));
        }
    }

    /**
     * Method-wide parameters, mergekit's names. {@code int8_mask} is accepted for mergekit's files and changes nothing:
     * masks here are booleans, computed entry by entry.
     *
     * @param normalize divide by the sum of the weights (linear, ties: yes; task_arithmetic, dare_*: no)
     * @param lambda scales the merged task vector
     * @param rescale ties, dare_*: scale the kept entries of each task vector so that its L1 norm is unchanged (default:
     *     yes for dare_*, no for ties, as in mergekit)
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Parameters(
            @JsonProperty("weight") ParameterSetting weight,
            @JsonProperty("density") ParameterSetting density,
            @JsonProperty("normalize") Boolean normalize,
            @JsonProperty("lambda") ParameterSetting lambda,
            @JsonProperty("t") ParameterSetting t,
            @JsonProperty("decay") Double decay,
            @JsonProperty("rescale") Boolean rescale,
            @JsonProperty("int8_mask") Boolean int8Mask,
            @JsonProperty("scale") ParameterSetting scale,
            @JsonProperty("filter_wise") Boolean filterWise,
            @JsonProperty("gamma") ParameterSetting gamma,
            @JsonProperty("epsilon") ParameterSetting epsilon,
            @JsonProperty("nuslerp_flatten") Boolean nuslerpFlatten,
            @JsonProperty("nuslerp_row_wise") Boolean nuslerpRowWise,
            @JsonProperty("normalize_weights") Boolean normalizeWeights,
            @JsonProperty("max_iter") Integer maxIter,
            @JsonProperty("tol") Double tol,
            @JsonProperty("select_topk") ParameterSetting selectTopk,
            @JsonProperty("r") ParameterSetting r,
            @JsonProperty("alpha") ParameterSetting alpha) {
        @JsonCreator
        public Parameters {
            requireFinite("select_topk", selectTopk);
            requireFinite("r", r);
            requireFinite("alpha", alpha);
            if (maxIter != null && maxIter < 0) {
                throw new IllegalArgumentException("max_iter must be a number of iterations (0 or more), got " + maxIter);
            }
            if (tol != null && !(tol >= 0 && Double.isFinite(tol))) {
                throw new IllegalArgumentException("tol must be a finite number >= 0, got " + tol);
            }
            requireFinite("weight", weight);
            requireFinite("scale", scale);
            requireGamma(gamma);
            requireEpsilon(epsilon);
            requireDensity(density);
            requireFinite("lambda", lambda);
            if (t != null && !t.all(v -> v >= 0 && v <= 1)) {
                throw new IllegalArgumentException("t must lie in [0, 1] (0: the first model, 1: the second), got "
                        + t.yamlValue());
            }
            if (decay != null && !(decay >= 0 && decay < 1)) {
                throw new IllegalArgumentException("decay must lie in [0, 1), got " + decay);
            }
        }

        /** One number each, as the command line gives them. */
        public Parameters(Double weight, Double density, Boolean normalize, Double lambda, Double t, Double decay,
                Boolean rescale, Boolean int8Mask) {
            this(ParameterSetting.of(weight), ParameterSetting.of(density), normalize, ParameterSetting.of(lambda),
                    ParameterSetting.of(t), decay, rescale, int8Mask, null, null, null, null, null, null, null, null, null,
                    null, null, null);
        }

        public static Parameters none() {
            return new Parameters((ParameterSetting) null, null, null, null, null, null, null, null, null, null, null,
                    null, null, null, null, null, null, null, null, null);
        }

        /**
         * A slice's parameters over these method-wide ones, as mergekit's ConfigReader looks them up: the slice's
         * value where it has one for the tensor (a filtered list may have none), else this one.
         */
        Parameters under(Parameters slice) {
            return new Parameters(ParameterSetting.layered(slice.weight, weight),
                    ParameterSetting.layered(slice.density, density), firstGiven(slice.normalize, normalize),
                    ParameterSetting.layered(slice.lambda, lambda), ParameterSetting.layered(slice.t, t),
                    firstGiven(slice.decay, decay), firstGiven(slice.rescale, rescale),
                    firstGiven(slice.int8Mask, int8Mask), ParameterSetting.layered(slice.scale, scale),
                    firstGiven(slice.filterWise, filterWise), ParameterSetting.layered(slice.gamma, gamma),
                    ParameterSetting.layered(slice.epsilon, epsilon), firstGiven(slice.nuslerpFlatten, nuslerpFlatten),
                    firstGiven(slice.nuslerpRowWise, nuslerpRowWise),
                    firstGiven(slice.normalizeWeights, normalizeWeights), firstGiven(slice.maxIter, maxIter),
                    firstGiven(slice.tol, tol), ParameterSetting.layered(slice.selectTopk, selectTopk),
                    ParameterSetting.layered(slice.r, r), ParameterSetting.layered(slice.alpha, alpha));
        }

        private static <T> T firstGiven(T first, T then) {
            return first != null ? first : then;
        }

        /** The settings that differ between tensors or are given at all, for checks against the method. */
        private List<ParameterSetting> settings() {
            return java.util.Arrays.asList(weight, density, lambda, t, scale, gamma, epsilon, selectTopk, r, alpha);
        }
    }

    /** One source of a slice: layers [first, end) of a model, mergekit's layer_range. */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Source(@JsonProperty("model") Path model, @JsonProperty("layer_range") List<Integer> layerRange,
            @JsonProperty("parameters") ModelParameters parameters) {
        @JsonCreator
        public Source {
            if (model == null) {
                throw new IllegalArgumentException("model is missing: each source of a slice names a directory");
            }
            if (layerRange == null || layerRange.size() != 2 || layerRange.get(0) < 0
                    || layerRange.get(1) <= layerRange.get(0)) {
                throw new IllegalArgumentException("layer_range must be [first, end] with 0 <= first < end (end"
                        + " excluded), got " + layerRange);
            }
            layerRange = List.copyOf(layerRange);
            parameters = parameters == null ? new ModelParameters((ParameterSetting) null, null) : parameters;
        }

        int first() {
            return layerRange.get(0);
        }

        int length() {
            return layerRange.get(1) - layerRange.get(0);
        }
    }

    /**
     * mergekit's output slice: its layers are merged from equally long layer ranges of its sources, with its
     * parameters between each source's and the method-wide ones.
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Slice(@JsonProperty("sources") List<Source> sources, @JsonProperty("parameters") Parameters parameters) {
        @JsonCreator
        public Slice {
            if (sources == null || sources.isEmpty()) {
                throw new IllegalArgumentException("sources is missing: list the models of the slice");
            }
            sources = List.copyOf(sources);
            parameters = parameters == null ? Parameters.none() : parameters;
            for (Source source : sources) {
                if (source.length() != sources.get(0).length()) {
                    throw new IllegalArgumentException("layer_range " + source.layerRange() + " spans " + source.length()
                            + " layers but " + sources.get(0).layerRange() + " spans " + sources.get(0).length()
                            + ": all sources of a slice must span the same number of layers (mergekit's rule)");
                }
            }
        }

        int length() {
            return sources.get(0).length();
        }
    }

    /** A merge of whole models, as the command line gives it: no tokenizer_source, no layer_range. */
    public MergeConfig(MergeMethod method, Path baseModel, List<Model> models, Parameters parameters, Integer last,
            Integer rank, Long seed, DType dtype, Path out) {
        this(method, baseModel, models, parameters, last, rank, seed, dtype, null, null, null, out);
    }

    /** Without out_dtype and chat_template: the output is written in dtype, with its tokenizer's own template. */
    public MergeConfig(MergeMethod method, Path baseModel, List<Model> models, Parameters parameters, Integer last,
            Integer rank, Long seed, DType dtype, Path tokenizerSource, List<Integer> layerRange, List<Slice> slices,
            Path out) {
        this(method, baseModel, models, parameters, last, rank, seed, dtype, null, tokenizerSource, null, layerRange,
                slices, out);
    }

    /** A merge of whole models, or of the layers of one slice when layer_range is given. */
    public MergeConfig(MergeMethod method, Path baseModel, List<Model> models, Parameters parameters, Integer last,
            Integer rank, Long seed, DType dtype, Path tokenizerSource, List<Integer> layerRange, Path out) {
        this(method, baseModel, models, parameters, last, rank, seed, dtype, tokenizerSource, layerRange, null, out);
    }

    @JsonCreator
    public MergeConfig {
        if (method == null) {
            throw new IllegalArgumentException("merge_method is missing: one of " + String.join(", ", MergeMethod.names()));
        }
        if (models == null || models.isEmpty()) {
            throw new IllegalArgumentException("models is empty: name the models to merge");
        }
        models = List.copyOf(models);
        parameters = parameters == null ? Parameters.none() : parameters;
        if (out == null) {
            throw new IllegalArgumentException("out is missing: the directory to write the merged model to (in the"
                    + " file, or on the command line after it as mergekit-yaml takes it: mixtune merge merge.yaml OUT)");
        }
        if (dtype != null && !dtype.isFloat32Convertible()) {
            throw new IllegalArgumentException("dtype must be bfloat16, float16 or float32, got " + dtype);
        }
        if (outDtype != null && !outDtype.isFloat32Convertible()) {
            throw new IllegalArgumentException("out_dtype must be bfloat16, float16 or float32, got " + outDtype);
        }
        MergedChatTemplate.requireValid(chatTemplate);
        if (rank != null && rank <= 0) {
            throw new IllegalArgumentException("rank must be a positive integer, got " + rank);
        }
        slices = slices == null ? null : List.copyOf(slices);
        requireFitsMethod(method, baseModel, models, parameters, last, slices);
        if (slices != null) {
            requireSlicesFit(method, baseModel, models, slices, layerRange);
        }
        requireApart(out, baseModel, models);
        if (tokenizerSource != null && !tokenizerSource.toString().equals(TOKENIZER_FROM_BASE)
                && models.stream().noneMatch(m -> samePath(m.model(), tokenizerSource))
                && (baseModel == null || !samePath(baseModel, tokenizerSource))) {
            throw new IllegalArgumentException("tokenizer_source must be base or one of the models, got '"
                    + tokenizerSource + "'" + (tokenizerSource.toString().equals("union")
                    ? ": union (a vocabulary joined from every model's) is not supported yet: mergekit's"
                    + " build_union_tokenizer adds every model's tokens and PermutedEmbeddings rebuilds each model's"
                    + " embedding rows for the joined vocabulary, which mixtune does not; mixtune merges models that"
                    + " share one tokenizer: name base or one of the models" : ""));
        }
        if (tokenizerSource != null && tokenizerSource.toString().equals(TOKENIZER_FROM_BASE) && baseModel == null) {
            throw new IllegalArgumentException("tokenizer_source is base but there is no base_model");
        }
        if (layerRange != null && (layerRange.size() != 2 || layerRange.get(0) != 0 || layerRange.get(1) <= 0)) {
            throw new IllegalArgumentException("layer_range must be [0, number of layers], got " + layerRange);
        }
        layerRange = layerRange == null ? null : List.copyOf(layerRange);
    }

    /**
     * The dtype the merged tensors are written in: out_dtype, else dtype (null: each tensor's donor's). mergekit
     * computes in dtype and writes out_dtype; mixtune computes in float32 whatever dtype says.
     */
    public DType writtenDtype() {
        return outDtype != null ? outDtype : dtype;
    }

    /** mergekit's tokenizer_source naming the base model rather than a path. */
    public static final String TOKENIZER_FROM_BASE = "base";

    /** The input whose tokenizer files the merge carries: tokenizer_source, else the base, else the first model. */
    Path tokenizerInput() {
        if (tokenizerSource == null) {
            return baseModel != null ? baseModel : models.get(0).model();
        }
        return tokenizerSource.toString().equals(TOKENIZER_FROM_BASE) ? baseModel : tokenizerSource;
    }

    /** Whether some parameter differs between tensors (a gradient or a filtered list), as opposed to one number. */
    public boolean variesByTensor() {
        List<ParameterSetting> settings = new ArrayList<>(parameters.settings());
        for (Model model : models) {
            settings.add(model.parameters().weight());
            settings.add(model.parameters().density());
            settings.add(model.parameters().scale());
            settings.add(model.parameters().gamma());
            settings.add(model.parameters().epsilon());
        }
        return settings.stream().anyMatch(s -> s != null && !s.isConstant());
    }

    /**
     * out must not be, hold or lie inside an input: replacing it (--force) would delete that input, writing into it
     * would change one. A training run given as an input holds the checkpoints it stands for, so they are covered.
     */
    private static void requireApart(Path out, Path baseModel, List<Model> models) {
        List<Path> inputs = new ArrayList<>(models.stream().map(Model::model).toList());
        if (baseModel != null) {
            inputs.add(baseModel);
        }
        for (Path input : inputs) {
            String problem = PathOverlap.problem("out", out, input);
            if (problem != null) {
                throw new IllegalArgumentException(problem);
            }
        }
    }

    /** Settings that would be silently ignored are refused: a density given to linear is a mistake to point out. */
    private static void requireFitsMethod(MergeMethod method, Path baseModel, List<Model> models, Parameters global,
            Integer last, List<Slice> slices) {
        String name = method.yamlName();
        boolean baseAmongModels = baseModel != null && models.stream().anyMatch(m -> samePath(m.model(), baseModel));
        boolean donorBase = method == MergeMethod.LINEAR || method == MergeMethod.PASSTHROUGH;
        if (!method.takesBaseApart() && method != MergeMethod.SLERP && method != MergeMethod.KARCHER && baseModel != null
                && !(donorBase && baseAmongModels)) {
            throw new IllegalArgumentException(name + " takes no base_model (only the task-vector methods,"
                    + " model_stock, slerp, nuslerp, multislerp, nearswap, karcher, sce, arcee_fusion and ram* do" + (donorBase ? "; " + name + " takes one only when it is one of its"
                    + " models, giving the config and tokenizer" : "") + ")");
        }
        // A slice's parameters are checked as the method-wide ones, its sources' as the models'.
        Parameters parameters = global;
        List<ModelParameters> modelParameters = new ArrayList<>(models.stream().map(Model::parameters).toList());
        for (Slice slice : slices == null ? List.<Slice>of() : slices) {
            parameters = parameters.under(slice.parameters());
            slice.sources().forEach(source -> modelParameters.add(source.parameters()));
        }
        boolean weighted = parameters.weight() != null || modelParameters.stream().anyMatch(m -> m.weight() != null);
        if (weighted && !method.takesWeights()) {
            throw new IllegalArgumentException(name + " takes no weights: "
                    + (method == MergeMethod.EMA ? "the decay sets them"
                    : method == MergeMethod.PASSTHROUGH ? "it copies one model per slice (scale multiplies it)"
                    : method == MergeMethod.NEARSWAP ? "t sets how far it moves from the base"
                    : method == MergeMethod.SCE ? "each model's weight is its mean squared task vector"
                    : method == MergeMethod.RAM || method == MergeMethod.RAMPLUS_TL
                    ? "shared entries are averaged, unique ones kept"
                    : method == MergeMethod.ARCEE_FUSION ? "it takes the model's entries where they matter most"
                    : "it averages uniformly"));
        }
        boolean dense = parameters.density() != null || modelParameters.stream().anyMatch(m -> m.density() != null);
        if (dense && method.sparsification() == MergeMethod.Sparsification.NONE) {
            throw new IllegalArgumentException(name + " takes no density (only the sparsifying task-vector methods do:"
                    + " ties, dare_*, breadcrumbs*, della*)");
        }
        boolean scaled = parameters.scale() != null || modelParameters.stream().anyMatch(m -> m.scale() != null);
        if (scaled && method != MergeMethod.PASSTHROUGH) {
            throw new IllegalArgumentException(name + " takes no scale (only passthrough does)");
        }
        boolean outliers = parameters.gamma() != null || modelParameters.stream().anyMatch(m -> m.gamma() != null);
        if (outliers && method.sparsification() != MergeMethod.Sparsification.MAGNITUDE_OUTLIERS) {
            throw new IllegalArgumentException(name + " takes no gamma (only breadcrumbs and breadcrumbs_ties do:"
                    + " the fraction of largest magnitudes dropped)");
        }
        boolean ram = method == MergeMethod.RAM || method == MergeMethod.RAMPLUS_TL;
        boolean ownSpread = modelParameters.stream().anyMatch(m -> m.epsilon() != null);
        if (ram && ownSpread) {
            throw new IllegalArgumentException(name + " takes epsilon method-wide only (mergekit's parameter of the"
                    + " merge), not per model");
        }
        boolean spread = parameters.epsilon() != null || ownSpread;
        if (spread && !ram && method.sparsification() != MergeMethod.Sparsification.MAGNITUDE_RANKED) {
            throw new IllegalArgumentException(name + " takes no epsilon (only della and della_linear do: the spread"
                    + " of the keep probabilities around density; and ram, ramplus_tl: the smallest entry counted)");
        }
        // della's keep probabilities spread over density -/+ epsilon; ram's epsilon is a magnitude threshold
        // (mergekit's default 1e-5), bounded only below.
        List<ParameterSetting> spreads = new ArrayList<>();
        spreads.add(parameters.epsilon());
        modelParameters.forEach(m -> spreads.add(m.epsilon()));
        for (ParameterSetting epsilon : spreads) {
            if (!ram && epsilon != null && !epsilon.all(e -> e < 0.5)) {
                throw new IllegalArgumentException("epsilon must lie in [0, 0.5) (keep probabilities spread over"
                        + " density -/+ epsilon), got " + epsilon.yamlValue());
            }
        }
        if (parameters.filterWise() != null && method != MergeMethod.MODEL_STOCK) {
            throw new IllegalArgumentException(name + " takes no filter_wise (only model_stock does: one angle per"
                    + " row)");
        }
        if (method == MergeMethod.MODEL_STOCK && slices == null && models.stream()
                .filter(m -> baseModel == null || !samePath(m.model(), baseModel)).count() < 2) {
            throw new IllegalArgumentException("model_stock needs base_model and at least two other models (mergekit's"
                    + " rule: the angle between their task vectors sets the interpolation)");
        }
        if (method == MergeMethod.PASSTHROUGH && slices == null && models.size() != 1) {
            throw new IllegalArgumentException("passthrough copies one source per slice (mergekit's rule), got "
                    + models.size() + " models; stack or cut layers with slices, one source each");
        }
        if (parameters.t() == null && method == MergeMethod.NEARSWAP) {
            throw new IllegalArgumentException("nearswap needs t: entries of the model within t of the base's are"
                    + " taken from the model, farther ones moved t towards it");
        }
        if ((parameters.t() != null) != (method == MergeMethod.SLERP) && method != MergeMethod.NEARSWAP) {
            throw new IllegalArgumentException(method == MergeMethod.SLERP
                    ? "slerp needs t in [0, 1]: 0 gives the first model, 1 the second"
                    : name + " takes no t (only slerp and nearswap do)");
        }
        if ((parameters.nuslerpFlatten() != null || parameters.nuslerpRowWise() != null)
                && method != MergeMethod.NUSLERP) {
            throw new IllegalArgumentException(name + " takes no nuslerp_flatten or nuslerp_row_wise (only nuslerp"
                    + " does)");
        }
        if ((parameters.maxIter() != null || parameters.tol() != null) && method != MergeMethod.KARCHER) {
            throw new IllegalArgumentException(name + " takes no max_iter or tol (only karcher does)");
        }
        if ((parameters.r() != null || parameters.alpha() != null) && method != MergeMethod.RAMPLUS_TL) {
            throw new IllegalArgumentException(name + " takes no r or alpha (only ramplus_tl does)");
        }
        if (parameters.selectTopk() != null && method != MergeMethod.SCE) {
            throw new IllegalArgumentException(name + " takes no select_topk (only sce does)");
        }
        if (parameters.normalizeWeights() != null && method != MergeMethod.MULTISLERP) {
            throw new IllegalArgumentException(name + " takes no normalize_weights (only multislerp does)");
        }
        if (parameters.normalize() != null && method.family() == MergeMethod.Family.SPHERICAL) {
            throw new IllegalArgumentException(name + " takes no normalize" + (method == MergeMethod.MULTISLERP
                    ? ": multislerp's is normalize_weights" : ": nuslerp's t is w_1 / (w_0 + w_1)"));
        }
        if (method == MergeMethod.NUSLERP || method == MergeMethod.NEARSWAP || method == MergeMethod.ARCEE_FUSION) {
            long others = models.stream().filter(m -> baseModel == null || !samePath(m.model(), baseModel)).count();
            if (slices == null && others != (method == MergeMethod.NUSLERP ? 2 : 1)) {
                throw new IllegalArgumentException(method == MergeMethod.NUSLERP
                        ? "nuslerp interpolates exactly two models besides base_model (mergekit's rule), got " + others
                        : name + " takes base_model and exactly one other model (mergekit's rule), got " + others);
            }
        }
        if ((parameters.decay() != null) != (method == MergeMethod.EMA)) {
            throw new IllegalArgumentException(method == MergeMethod.EMA
                    ? "ema needs decay in [0, 1): ema = decay * ema + (1 - decay) * checkpoint, oldest first"
                    : name + " takes no decay (only ema does)");
        }
        if (parameters.normalize() != null && !method.takesWeights()) {
            throw new IllegalArgumentException(name + " takes no normalize: its weights always sum to 1");
        }
        if (parameters.lambda() != null && method.family() != MergeMethod.Family.TASK_VECTORS) {
            throw new IllegalArgumentException(name + " takes no lambda (only the task-vector methods do)");
        }
        if (parameters.rescale() != null && method.sparsification() == MergeMethod.Sparsification.NONE) {
            throw new IllegalArgumentException(name + " takes no rescale (only the sparsifying task-vector methods do)");
        }
        boolean ordered = method == MergeMethod.SWA || method == MergeMethod.LAWA || method == MergeMethod.EMA;
        if (last != null && !ordered) {
            throw new IllegalArgumentException(name + " takes no last (only swa, lawa and ema average the latest"
                    + " checkpoints)");
        }
        if (last != null && last <= 0) {
            throw new IllegalArgumentException("last must be a positive number of checkpoints, got " + last);
        }
        if (method == MergeMethod.LAWA && last == null) {
            throw new IllegalArgumentException("lawa averages the latest k checkpoints: give last (k)");
        }
        if (method == MergeMethod.SLERP && slices == null) {
            boolean baseApart = baseModel != null && models.stream().noneMatch(m -> samePath(m.model(), baseModel));
            int ends = models.size() + (baseApart ? 1 : 0);
            if (ends != 2) {
                throw new IllegalArgumentException("slerp interpolates exactly two models (base_model, if given, is"
                        + " the first), got " + ends);
            }
        }
    }

    /** mergekit's slice rules: passthrough copies one source per slice; a task-vector slice holds its base. */
    private static void requireSlicesFit(MergeMethod method, Path baseModel, List<Model> models, List<Slice> slices,
            List<Integer> layerRange) {
        if (layerRange != null) {
            throw new IllegalArgumentException("give slices or layer_range, not both");
        }
        for (int i = 0; i < slices.size(); i++) {
            List<Source> sources = slices.get(i).sources();
            for (Source source : sources) {
                if (models.stream().noneMatch(m -> samePath(m.model(), source.model()))
                        && !(baseModel != null && samePath(baseModel, source.model()))) {
                    throw new IllegalArgumentException("slices[" + i + "]: " + source.model() + " is not among models "
                            + models.stream().map(Model::model).toList());
                }
            }
            if (method == MergeMethod.PASSTHROUGH && sources.size() != 1) {
                throw new IllegalArgumentException("slices[" + i + "] has " + sources.size() + " sources: passthrough"
                        + " copies one source per slice (mergekit's rule); stack them as slices of their own");
            }
            // nuslerp, multislerp and slerp too: given a base, it is their origin (slerp's t = 0 end), read per slice
            if ((method.needsBase() || (method.takesBaseApart() || method == MergeMethod.SLERP) && baseModel != null)
                    && sources.stream().noneMatch(s -> samePath(s.model(), baseModel))) {
                throw new IllegalArgumentException("slices[" + i + "]: base_model " + baseModel + " is none of its"
                        + " sources; as in mergekit, a slice's task vectors are measured from the base's layers it"
                        + " lists: add base_model with its layer_range");
            }
            // the models form's counts (requireFitsMethod), per slice: each slice is merged as such a merge
            long others = sources.stream().filter(s -> baseModel == null || !samePath(s.model(), baseModel)).count();
            if (method == MergeMethod.MODEL_STOCK && others < 2) {
                throw new IllegalArgumentException("slices[" + i + "] has " + others + " sources besides base_model:"
                        + " model_stock needs base_model and at least two other models (mergekit's rule: the angle"
                        + " between their task vectors sets the interpolation)");
            }
            if (method == MergeMethod.NUSLERP && others != 2) {
                throw new IllegalArgumentException("slices[" + i + "] has " + others + " sources besides base_model:"
                        + " nuslerp interpolates exactly two models besides base_model (mergekit's rule)");
            }
            if ((method == MergeMethod.NEARSWAP || method == MergeMethod.ARCEE_FUSION) && others != 1) {
                throw new IllegalArgumentException("slices[" + i + "] has " + others + " sources besides base_model: "
                        + method.yamlName() + " takes base_model and exactly one other model (mergekit's rule)");
            }
            if (method == MergeMethod.SLERP && sources.size() != 2) {
                throw new IllegalArgumentException("slices[" + i + "] has " + sources.size() + " sources: slerp"
                        + " interpolates exactly two (base_model, if given, is the first)");
            }
        }
    }

    /**
     * Slice i as a merge of whole models, for {@link ModelMerge#tensorMerge}: its sources (the base apart for the
     * task-vector methods) with their parameters, the slice's parameters over the method-wide ones.
     */
    MergeConfig sliceView(int i) {
        Slice slice = slices.get(i);
        List<Model> sources = slice.sources().stream()
                .filter(s -> !method.takesBaseApart() || baseModel == null || !samePath(s.model(), baseModel))
                .map(s -> new Model(s.model(), s.parameters())).toList();
        Path viewBase = method.takesBaseApart() || method == MergeMethod.SLERP ? baseModel : null;
        return new MergeConfig(method, viewBase, sources, parameters.under(slice.parameters()), null, null, seed,
                dtype, outDtype, null, chatTemplate, null, null, out);
    }

    /** The models form with a layer_range that cuts layers, as the one slice it stands for. */
    MergeConfig asOneSlice() {
        List<Model> all = new ArrayList<>(models);
        if (baseModel != null && all.stream().noneMatch(m -> samePath(m.model(), baseModel))) {
            all.add(0, Model.of(baseModel));
        }
        List<Source> sources = all.stream().map(m -> new Source(m.model(), layerRange, m.parameters())).toList();
        return new MergeConfig(method, baseModel, all.stream().map(m -> Model.of(m.model())).toList(), parameters,
                null, rank, seed, dtype, outDtype, tokenizerSource, chatTemplate, null, List.of(new Slice(sources, null)),
                out);
    }

    static boolean samePath(Path a, Path b) {
        return a.toAbsolutePath().normalize().equals(b.toAbsolutePath().normalize());
    }

    private static void requireDensity(ParameterSetting density) {
        if (density != null && !density.all(d -> d > 0 && d <= 1)) {
            throw new IllegalArgumentException("density must lie in (0, 1] (the fraction of each task vector kept),"
                    + " got " + density.yamlValue());
        }
    }

    private static void requireGamma(ParameterSetting gamma) {
        if (gamma != null && !gamma.all(g -> g >= 0 && g <= 1)) {
            throw new IllegalArgumentException("gamma must lie in [0, 1] (the fraction of largest magnitudes dropped),"
                    + " got " + gamma.yamlValue());
        }
    }

    /** Any method's epsilon; della's tighter bound is checked with its method ({@link #requireFitsMethod}). */
    private static void requireEpsilon(ParameterSetting epsilon) {
        if (epsilon != null && !epsilon.all(e -> e >= 0 && Double.isFinite(e))) {
            throw new IllegalArgumentException("epsilon must be a finite number >= 0, got " + epsilon.yamlValue());
        }
    }

    private static void requireFinite(String key, ParameterSetting value) {
        if (value != null && !value.all(Double::isFinite)) {
            throw new IllegalArgumentException(key + " must be a finite number, got " + value.yamlValue());
        }
    }

    /**
     * The weight of model i for a tensor at layer position t: its own, else the method-wide one, else 1 (mergekit's
     * order; a filtered list that matches nothing passes on to the next).
     */
    double weightOf(int i, String tensorName, double t) {
        return ofModel(i, ModelParameters::weight, parameters.weight(), tensorName, t, 1.0);
    }

    /** The density of model i: its own, else the method-wide one, else 1 (keep everything), as in mergekit. */
    double densityOf(int i, String tensorName, double t) {
        return ofModel(i, ModelParameters::density, parameters.density(), tensorName, t, 1.0);
    }

    /** passthrough's scale of model i: its own, else the method-wide one, else 1 (a copy). */
    double scaleOf(int i, String tensorName, double t) {
        return ofModel(i, ModelParameters::scale, parameters.scale(), tensorName, t, 1.0);
    }

    boolean normalize() {
        return parameters.normalize() == null ? method.normalizesByDefault() : parameters.normalize();
    }

    double lambda(String tensorName, double t) {
        return firstNonNull(value(parameters.lambda(), tensorName, t), null, 1.0);
    }

    /** slerp's t for a tensor; a filtered t that matches no tensor name is an error, as in mergekit. */
    double t(String tensorName, double position) {
        Double t = value(parameters.t(), tensorName, position);
        if (t == null) {
            throw new IllegalArgumentException("t has no value for tensor '" + tensorName + "': no filter matches it;"
                    + " end the list with a value without filter");
        }
        return t;
    }

    /** Model i's own setting for the tensor, else the method-wide one, else mergekit's default for the key. */
    private double ofModel(int i, java.util.function.Function<ModelParameters, ParameterSetting> own,
            ParameterSetting methodWide, String tensorName, double t, double mergekitDefault) {
        return firstNonNull(value(own.apply(models.get(i).parameters()), tensorName, t),
                value(methodWide, tensorName, t), mergekitDefault);
    }

    private static Double value(ParameterSetting setting, String tensorName, double t) {
        return setting == null ? null : setting.at(tensorName, t);
    }

    /** mergekit's default: dare_* and della* rescale, ties and breadcrumbs* do not. */
    boolean rescale() {
        return parameters.rescale() == null ? method.rescalesByDefault() : parameters.rescale();
    }

    /** breadcrumbs' gamma of model i: its own, else the method-wide one, else mergekit's 0.01. */
    double gammaOf(int i, String tensorName, double t) {
        return ofModel(i, ModelParameters::gamma, parameters.gamma(), tensorName, t, 0.01);
    }

    /** della's epsilon of model i: its own, else the method-wide one, else mergekit's 0.15. */
    double epsilonOf(int i, String tensorName, double t) {
        return ofModel(i, ModelParameters::epsilon, parameters.epsilon(), tensorName, t, 0.15);
    }

    /** nuslerp: the whole tensor is one vector (mergekit's default), else its rows, or with row_wise its columns. */
    boolean nuslerpFlatten() {
        return !Boolean.FALSE.equals(parameters.nuslerpFlatten());
    }

    boolean nuslerpRowWise() {
        return Boolean.TRUE.equals(parameters.nuslerpRowWise());
    }

    /** multislerp: weights divided by their sum unless normalize_weights: false. */
    boolean normalizeWeights() {
        return !Boolean.FALSE.equals(parameters.normalizeWeights());
    }

    /** karcher's iteration limit and tolerance, mergekit's defaults 10 and 1e-5. */
    int maxIter() {
        return parameters.maxIter() == null ? 10 : parameters.maxIter();
    }

    double tol() {
        return parameters.tol() == null ? 1e-5 : parameters.tol();
    }

    /** sce's fraction of entries kept by their variance across the models, mergekit's default 1 (all). */
    double selectTopk(String tensorName, double t) {
        return firstNonNull(value(parameters.selectTopk(), tensorName, t), null, 1.0);
    }

    /** ram's and ramplus_tl's epsilon (entries at most this large count as zero) and ramplus_tl's r and alpha. */
    double ramEpsilon(String tensorName, double t) {
        return firstNonNull(value(parameters.epsilon(), tensorName, t), null, 1e-5);
    }

    double ramR(String tensorName, double t) {
        return firstNonNull(value(parameters.r(), tensorName, t), null, 0.1);
    }

    double ramAlpha(String tensorName, double t) {
        return firstNonNull(value(parameters.alpha(), tensorName, t), null, 0.2);
    }

    boolean filterWise() {
        return Boolean.TRUE.equals(parameters.filterWise());
    }

    long seedOrDefault() {
        return seed == null ? 0L : seed;
    }

    /** The same merge of other inputs (run directories expanded, the latest {@code last} kept). */
    MergeConfig withModels(List<Model> resolved) {
        return new MergeConfig(method, baseModel, resolved, parameters, last == null ? null : resolved.size(), rank, seed,
                dtype, outDtype, tokenizerSource, chatTemplate, layerRange, slices, out);
    }

    /** Weights as the command line gives them, one per input in order. */
    public static List<Model> models(List<Path> inputs, List<Double> weights) {
        if (weights != null && weights.size() != inputs.size()) {
            throw new IllegalArgumentException("weights has " + weights.size() + " values for " + inputs.size()
                    + " models: give one weight per model, in the same order");
        }
        List<Model> models = new ArrayList<>();
        for (int i = 0; i < inputs.size(); i++) {
            models.add(new Model(inputs.get(i), new ModelParameters(
                    weights == null ? null : ParameterSetting.of(weights.get(i)), null)));
        }
        return models;
    }

    /** bf16/bfloat16, fp16/float16, fp32/float32, or the safetensors names BF16/F16/F32. */
    public static DType parseDtype(String name) {
        return switch (name.trim().toLowerCase(Locale.ROOT)) {
            case "bf16", "bfloat16" -> DType.BF16;
            case "fp16", "f16", "float16", "half" -> DType.F16;
            case "fp32", "f32", "float32", "float" -> DType.F32;
            default -> throw new IllegalArgumentException("dtype must be bfloat16, float16 or float32, got '" + name + "'");
        };
    }

    private static double firstNonNull(Double a, Double b, double fallback) {
        return Objects.requireNonNullElse(a, Objects.requireNonNullElse(b, fallback));
    }
}
