package io.mixtune.trainer.recipe;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
import io.mixtune.data.batch.PackingStrategy;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.read.ChatFileReader;
import io.mixtune.lora.adapter.LoraConfig;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.StringReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;

/**
 * Reads a recipe: the bundled defaults, then the files it includes (in order), then the recipe, then each
 * {@code --set key.path=value}; binds the result onto {@link Recipe} and checks that the files and the preset it names
 * exist. Every error names the file and line the offending value came from.
 *
 * <p>model.path and model.preset are one choice: a layer that names one drops the other from the layers beneath, so
 * {@code --set model.path=DIR} trains a recipe written for a preset on the real checkpoint.
 */
public final class RecipeReader {
    /** Defaults under every recipe; a classpath resource, edited in {@code configs/}. */
    public static final String DEFAULTS = "configs/recipe-defaults.yaml";
    static final String INCLUDE = "include";

    private RecipeReader() {}

    /** A recipe, the file it was read from, and where each of its values was set (for later problems). */
    public static final class Loaded {
        private final Recipe recipe;
        private final Path source;
        private final RecordBinder binder;

        private Loaded(Recipe recipe, Path source, RecordBinder binder) {
            this.recipe = recipe;
            this.source = source;
            this.binder = binder;
        }

        public Recipe recipe() {
            return recipe;
        }

        public Path source() {
            return source;
        }

        /** What the recipe says that will run but is likely not meant ("warning: " lines for validate and train). */
        public List<String> warnings() {
            return binder.warnings();
        }

        /**
         * A problem found after reading (in the data a key names, say), located as the reader's own are: "file:line:
         * key: message" where the user set the key, else the default named.
         */
        public String problem(String key, String message) {
            return binder.located(key) + message;
        }

        /** Whether the recipe, an include or --set gives {@code key} (as "data.packing_fit"), not its default. */
        public boolean sets(String key) {
            return binder.userSet(key);
        }

        /** The problem at the line that set its key. */
        public RecipeException locate(RecipeValueException e) {
            return new RecipeException(problem(e.key(), e.problem()));
        }
    }

    public static Loaded read(Path file, List<String> overrides) {
        if (Files.isDirectory(file)) {
            throw new RecipeException(file + ": is a directory, expected a recipe file (YAML)");
        }
        if (!Files.isRegularFile(file)) {
            throw new RecipeException(file + ": no such recipe file");
        }
        YamlTree merged = overlay(resource(DEFAULTS), withIncludes(file, new ArrayList<>()));
        for (String assignment : overrides) {
            merged = overlay(merged, YamlTree.override(assignment));
        }
        merged.root.remove(INCLUDE);
        JsonNode givenOutputDir = merged.root.get("output_dir");
        if (givenOutputDir == null || givenOutputDir.isNull()) {
            merged.root.put("output_dir", defaultOutputDir(file));
        }
        RecordBinder binder = new RecordBinder(merged, file.toString());
        Recipe recipe = binder.bind(Recipe.class, merged.root, "");
        check(binder);
        JsonNode outputDir = merged.root.get("output_dir");
        if (outputDir != null && outputDir.isTextual() && Files.isRegularFile(Path.of(outputDir.asText()))) {
            binder.problem("output_dir", outputDir.asText() + " is a file; expected a directory for the run's adapter, "
                    + "checkpoints and metrics (it is created if missing)");
        } else if (outputDir != null && outputDir.isTextual()) {
            Path blocking = Path.of(outputDir.asText()).toAbsolutePath().getParent();
            while (blocking != null && !Files.exists(blocking)) {
                blocking = blocking.getParent();
            }
            if (blocking != null && !Files.isDirectory(blocking)) {
                binder.problem("output_dir", outputDir.asText() + " cannot be created: " + blocking + " is a file");
            }
        }
        binder.throwIfAny();
        return new Loaded(recipe, file, binder);
    }

    /**
     * {@code out/<recipe file name without extension>}, relative to the working directory as a recipe's own output_dir
     * is: a recipe needs no output folder to be validated, previewed or trained.
     */
    public static String defaultOutputDir(Path recipeFile) {
        String name = recipeFile.getFileName().toString();
        int dot = name.lastIndexOf('.');
        return "out/" + (dot > 0 ? name.substring(0, dot) : name);
    }

    /** A file with what it includes beneath it; includes resolve beside the file, then among the bundled configs. */
    private static YamlTree withIncludes(Path file, List<Path> chain) {
        Path normalized = file.toAbsolutePath().normalize();
        if (chain.contains(normalized)) {
            throw new RecipeException(file + ": includes itself through " + chain);
        }
        chain.add(normalized);
        YamlTree tree;
        tree = YamlTree.parse(file);
        JsonNode include = tree.root.get(INCLUDE);
        if (include == null || include.isNull()) {
            chain.remove(normalized);
            return tree;
        }
        List<JsonNode> names = new ArrayList<>();
        if (include.isArray()) {
            include.forEach(names::add);
        } else {
            names.add(include);
        }
        YamlTree base = YamlTree.empty();
        for (int i = 0; i < names.size(); i++) {
            JsonNode name = names.get(i);
            String path = include.isArray() ? INCLUDE + "[" + i + "]" : INCLUDE;
            if (!name.isTextual()) {
                throw new RecipeException(tree.originOf(path) + ": " + INCLUDE + ": expected a file name, got " + name);
            }
            Path beside = file.toAbsolutePath().getParent().resolve(name.asText());
            if (Files.isRegularFile(beside)) {
                base = overlay(base, withIncludes(beside, chain));
            } else if (RecipeReader.class.getClassLoader().getResource(name.asText()) != null) {
                base = overlay(base, resource(name.asText()));
            } else {
                throw new RecipeException(tree.originOf(path) + ": " + INCLUDE + ": no file " + beside
                        + " and no bundled config " + name.asText());
            }
        }
        chain.remove(normalized);
        tree.root.remove(INCLUDE);
        return overlay(base, tree);
    }

    /** {@code top} over {@code base}; where top names model.path but not model.preset (or the reverse), the other goes. */
    private static YamlTree overlay(YamlTree base, YamlTree top) {
        YamlTree merged = base.overlay(top);
        if (top.root.get("model") instanceof ObjectNode model && merged.root.get("model") instanceof ObjectNode result) {
            for (String[] choice : new String[][] {{"path", "preset"}, {"preset", "path"}}) {
                if (model.hasNonNull(choice[0]) && !model.has(choice[1])) {
                    result.putNull(choice[1]);
                }
            }
        }
        return merged;
    }

    private static YamlTree resource(String name) {
        try (InputStream in = RecipeReader.class.getClassLoader().getResourceAsStream(name)) {
            if (in == null) {
                throw new IllegalStateException("bundled " + name + " is missing from the jar");
            }
            return YamlTree.parse(new InputStreamReader(in, StandardCharsets.UTF_8), name);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** What no single section can check alone: files and presets it names, and keys that contradict each other. */
    private static void check(RecordBinder binder) {
        Recipe.Model model = binder.section("model", Recipe.Model.class);
        Recipe.Lora lora = binder.section("lora", Recipe.Lora.class);
        DataConfig data = binder.section("data", DataConfig.class);
        Recipe.Train train = binder.section("train", Recipe.Train.class);
        Recipe.Dpo dpo = binder.section("dpo", Recipe.Dpo.class);
        Recipe.Averaging averaging = binder.section("averaging", Recipe.Averaging.class);
        ModelConfig config = null;
        if (model != null) {
            config = checkModel(model, binder);
            if (config != null) {
                checkAgainstModel(config, describeModel(model), lora, data, binder);
            }
            if (config != null && train != null && train.routerAuxLossCoef() != null && !config.isMixtureOfExperts()) {
                // A warning, as router_aux_loss (on by default) is silently nothing on a dense model: a Mixtral recipe
                // smoke-tested with --set model.preset=tiny-mistral runs; TRL too leaves the coefficient unused there
                binder.warning("train.router_aux_loss_coef", "weighs a Mixtral's load-balancing loss, and "
                        + describeModel(model) + " is a dense model without one: the coefficient is unused");
            }
        }
        if (model != null && lora != null && lora.useDora() && model.adapter() != null) {
            // The adapter's own adapter_config.json decides what trains on from it, as it does r and alpha: a plain
            // LoRA adapter would go on training plain LoRA while recipe.yaml says use_dora.
            Path adapterConfig = Path.of(model.adapter(), PeftAdapter.CONFIG_FILE);
            try {
                if (Files.isRegularFile(adapterConfig) && !PeftAdapter.readConfig(adapterConfig).useDora()) {
                    binder.problem("lora.use_dora", "is true, but model.adapter " + model.adapter() + " is a plain "
                            + "LoRA adapter (its adapter_config.json has no use_dora: true), and training goes on with "
                            + "the adapter as it is: drop lora.use_dora, or start DoRA from the base without "
                            + "model.adapter");
                }
            } catch (IllegalArgumentException e) {
                // model.adapter's own check names what is wrong with the file
            }
        }
        checkInitLoraWeights(model, lora, train, binder);
        if (data != null && train != null && (train.readsPreferencePairs() || train.readsLabeledExamples())) {
            // SFT's dataset types: a pair or KTO reader never looks at them, and would take the key silently
            if (List.of("text", "prompt_completion").contains(data.format())) {
                binder.problem("data.format", data.format() + " is one of SFT's dataset types, but train.method "
                        + train.method() + " reads " + (train.readsLabeledExamples() ? "unpaired examples ({prompt, "
                        + "completion, label}) or preference pairs" : "preference pairs (prompt, chosen, rejected)")
                        + ": drop data.format");
            }
            if (!data.datasetTextField().equals(ChatFileReader.TEXT_FIELD)) {
                binder.problem("data.dataset_text_field", "names the field of SFT's text records, but train.method "
                        + train.method() + " reads no text records: drop it");
            }
        }
        if (data != null && train != null && !data.packer().truncates() && !train.method().equals("sft")) {
            // only sft packs; another method would read the samples whole and never cut them to max_seq_len
            binder.problem("data.packing_strategy", data.packingStrategy() + " packs SFT data, but train.method "
                    + train.method() + " never packs: drop it (bfd, the default, cuts samples to max_seq_len)");
        }
        if (data != null && train != null && data.packer() == PackingStrategy.BFD_FIRST_FIT
                && !train.method().equals("sft")) {
            // as above: the key bins SFT's packed rows only (a resumed run of another method is never switched to it)
            binder.problem("data.packing_fit", "first_fit bins SFT's packed rows, but train.method "
                    + train.method() + " never packs: drop it");
        }
        if (data != null) {
            checkFilesExist(data.files(), "data.files", binder);
            checkFilesExist(data.validationFiles(), "data.validation_files", binder);
            if (!data.validationFiles().isEmpty() && data.validationRatio() > 0) {
                binder.conflict("data.validation_ratio", "goes with", "data.validation_files", "the validation set is "
                        + "either its own files or a share held out of the training samples; drop one of the two");
            }
        }
        if (train != null && train.maxSteps() != null && train.warmupSteps() > train.maxSteps()) {
            // A warning, not a problem: `--set train.max_steps=1` is how people smoke-test a recipe with a warmup, and
            // transformers runs such a schedule too; saying it is enough.
            binder.warnConflict("train.warmup_steps", "exceeds", "train.max_steps", "the learning rate will still be "
                    + "warming up when the run ends; lower warmup_steps for a full run");
        }
        if (train != null && train.warmupRatio() != null && train.warmupSteps() > 0) {
            // transformers lets warmup_steps win without a word; a recipe that sets both says two things
            binder.conflict("train.warmup_ratio", "goes with", "train.warmup_steps", "both set the warmup: keep one "
                    + "(warmup_steps: 0, or warmup_ratio: null)");
        }
        if (train != null) {
            BestModelChecks.check(train, data, averaging, config, model == null ? null : describeModel(model), binder);
        }
        if (dpo != null) {
            checkFilesExist(dpo.stageFiles(), "dpo.stages", binder);
        }
        if (train != null && train.method().equals("dpo")) {
            checkDpo(data, dpo, binder);
        }
        Recipe.Kto kto = binder.section("kto", Recipe.Kto.class);
        if (train != null && kto != null && train.readsLabeledExamples() && kto.estimatesKl()
                && train.microBatchSize() <= 1) {
            // TRL 1.13's KTOTrainer refuses it too: its KL estimate would be the implied reward itself
            binder.problem("train.micro_batch_size", "must be > 1 for kto.loss " + kto.loss() + ": the KL estimate "
                    + "pairs each prompt with another example's completion in the same micro-batch (TRL's "
                    + "per_device_train_batch_size, not the effective batch); got " + train.microBatchSize());
        }
        if (train != null && dpo != null && train.trainsWithoutReference()) {
            // DPO's pair reader would split the pairs into stages, of which ORPO and CPO would train the first only
            if (dpo.stageCount() > 1 || !dpo.stageFiles().isEmpty()) {
                binder.problem("dpo.stages", "Stage-DPO's stages are DPO's: train.method " + train.method()
                        + " trains once over data.files: drop dpo.stages");
            }
            if (dpo.stageOrder().equals(Recipe.Dpo.ORDER_MARGIN)) {
                binder.problem("dpo.stage_order", "orders Stage-DPO's stages: train.method " + train.method()
                        + " has none: drop it");
            }
        }
        Distillation distillation = binder.section("distillation", Distillation.class);
        if (distillation != null && distillation.teacherPreset() != null
                && !ModelPreset.NAMES.contains(distillation.teacherPreset())) {
            binder.problem("distillation.teacher_preset", "no preset named \"" + distillation.teacherPreset() + "\""
                    + RecordBinder.nearest(distillation.teacherPreset(), ModelPreset.NAMES) + ": expected one of "
                    + ModelPreset.NAMES);
        }
        if (train != null && train.readsPrompts()) {
            checkOtherPolicyGradientSection(train.method(), binder);
        }
        if (train != null && distillation != null && !train.method().equals("distillation")
                && (distillation.teacherModelNameOrPath() != null || distillation.teacherPreset() != null)) {
            binder.problem(distillation.teacherPreset() != null ? "distillation.teacher_preset"
                    : "distillation.teacher_model_name_or_path", "names a teacher, which only train.method: "
                    + "distillation reads, got train.method " + train.method());
        } else if (train != null && distillation != null && !train.method().equals("distillation")
                && (distillation.teacherAdapter() != null || distillation.teacherQuantize() != null)) {
            // null by default, so set on purpose: another method would ignore it
            binder.problem(distillation.teacherAdapter() != null ? "distillation.teacher_adapter"
                    : "distillation.teacher_quantize", "sets up a distillation teacher, which only train.method: "
                    + "distillation reads, got train.method " + train.method());
        }
        Recipe.Reward reward = binder.section("reward", Recipe.Reward.class);
        if (train != null && reward != null && reward.labelNoise() > 0 && !train.method().equals("reward")) {
            binder.problem("reward.label_noise", "flips reward-model training pairs: it needs train.method: reward, "
                    + "got " + train.method());
        }
        Recipe.Warm warm = binder.section("warm", Recipe.Warm.class);
        if (warm != null && train != null) {
            checkWarm(warm, train, model, lora, data, binder);
        }
    }

    /** Whether {@code adapter} (model.adapter, or null) is a DoRA adapter; false where its config is unreadable. */
    private static boolean isDoraAdapter(String adapter) {
        Path adapterConfig = adapter == null ? null : Path.of(adapter, PeftAdapter.CONFIG_FILE);
        try {
            return adapterConfig != null && Files.isRegularFile(adapterConfig)
                    && PeftAdapter.readConfig(adapterConfig).useDora();
        } catch (IllegalArgumentException e) {
            return false; // model.adapter's own check names what is wrong with the file
        }
    }

    /**
     * lora.init_lora_weights starts a fresh adapter only; PiSSA and OLoRA change the base weights, which the methods
     * whose reference model is the base with the adapter off (dpo, kto, grpo, rloo) and WARM's average cannot take.
     */
    private static void checkInitLoraWeights(Recipe.Model model, Recipe.Lora lora, Recipe.Train train,
            RecordBinder binder) {
        if (lora == null || lora.initLoraWeights().equals(LoraInit.PEFT_DEFAULT)) {
            return;
        }
        String key = "lora.init_lora_weights";
        if (model != null && model.adapter() != null) {
            binder.problem(key, "is " + lora.initLoraWeights() + ", but training goes on from model.adapter "
                    + model.adapter() + ", whose weights are loaded as they are: drop one of them");
        }
        if (lora.initLoraWeights().loftq() && model != null && !"nf4".equals(model.quantize())) {
            binder.problem(key, "is loftq, which starts the adapter from the NF4 quantisation error of each weight, "
                    + "but model.quantize is " + model.quantize() + ": set model.quantize: nf4, or use pissa");
        }
        if (lora.initLoraWeights().mutatesBase() && train != null && List.of("dpo", "kto", "grpo", "rloo")
                .contains(train.method())) {
            binder.problem(key, "is " + lora.initLoraWeights() + ", which takes the adapter's start out of the base "
                    + "weights, and train.method " + train.method() + " uses the base with the adapter off as its "
                    + "reference model, which would then be the residual: start with true or gaussian, or train the "
                    + "PiSSA/OLoRA adapter with sft first and pass it as model.adapter");
        }
    }

    /** What WARM asks of the other sections, and its lists' lengths. */
    private static void checkWarm(Recipe.Warm warm, Recipe.Train train, Recipe.Model model, Recipe.Lora lora,
            DataConfig data, RecordBinder binder) {
        Map<String, List<?>> varied = new LinkedHashMap<>();
        varied.put("seed", warm.vary().seed());
        varied.put("learning_rate", warm.vary().learningRate());
        varied.put("lora_dropout", warm.vary().loraDropout());
        if (!warm.enabled()) {
            varied.forEach((key, values) -> {
                if (!values.isEmpty()) {
                    binder.problem("warm.vary." + key, "varies WARM's members, but warm.members is 0 (off): set it "
                            + "to the number of reward models to train");
                }
            });
            return;
        }
        if (!train.method().equals("reward")) {
            binder.problem("warm.members", "WARM trains and averages reward models: it needs train.method: reward, "
                    + "got " + train.method());
        }
        varied.forEach((key, values) -> {
            if (values.size() > 1 && values.size() != warm.members()) {
                binder.problem("warm.vary." + key, "has " + values.size() + " values for " + warm.members()
                        + " members: give one per member, or one for all");
            }
        });
        if (lora != null && lora.useDora() || model != null && isDoraAdapter(model.adapter())) {
            // checked here, not after every member has trained: the average that ends the run cannot take DoRA's
            // magnitudes (AdapterAverage refuses them)
            binder.problem("lora.use_dora", "WARM averages its members' adapters, and DoRA adapters (lora.use_dora, or "
                    + "a DoRA model.adapter) do not average (each magnitude rescales its own direction): train WARM's "
                    + "members with plain LoRA, or set warm.members: 0");
        }
        if (lora != null && lora.initLoraWeights().mutatesBase()) {
            binder.problem("lora.init_lora_weights", "is " + lora.initLoraWeights() + ": WARM averages its members' "
                    + "adapters in the model, whose base weights PiSSA and OLoRA changed: use true or gaussian");
        }
        if (model != null && model.adapter() != null && !warm.vary().loraDropout().isEmpty()) {
            binder.problem("warm.vary.lora_dropout", "cannot vary: the members start from model.adapter "
                    + model.adapter() + ", whose adapter_config.json sets lora_dropout");
        }
        if (data != null && data.validationFiles().isEmpty() && data.validationRatio() <= 0) {
            binder.problem("warm.members", "WARM reports each member's held-out accuracy beside the average's: set "
                    + "data.validation_ratio or data.validation_files");
        }
    }

    /** The model's config.json (or preset), or null when model.path or model.preset names none (a problem then). */
    private static ModelConfig checkModel(Recipe.Model model, RecordBinder binder) {
        ModelConfig config = null;
        if (model.preset() != null) {
            if (!ModelPreset.NAMES.contains(model.preset())) {
                binder.problem("model.preset", "no preset named \"" + model.preset() + "\"" + RecordBinder.nearest(
                        model.preset(), ModelPreset.NAMES) + ": expected one of " + ModelPreset.NAMES);
            } else {
                config = ModelPreset.load(model.preset());
            }
        }
        if (model.path() != null) {
            Path dir = Path.of(model.path());
            if (Files.isRegularFile(dir)) {
                binder.problem("model.path", dir + " is a file, expected a Hugging Face checkpoint directory "
                        + "(config.json + safetensors)");
            } else if (!Files.isRegularFile(dir.resolve("config.json"))) {
                binder.problem("model.path", "no Hugging Face checkpoint at " + dir + " (" + (Files.isDirectory(dir)
                        ? "config.json missing" : "no such directory") + ")");
            } else {
                try {
                    config = ModelConfig.read(dir.resolve("config.json"));
                } catch (IllegalArgumentException e) {
                    binder.problem("model.path", e.getMessage());
                }
                checkWeightHeaders("model.path", dir, "model.safetensors", binder);
            }
        }
        if (model.adapter() != null) {
            Path adapter = Path.of(model.adapter());
            if (Files.isRegularFile(adapter)) {
                binder.problem("model.adapter", adapter + " is a file, expected a PEFT adapter directory "
                        + "(adapter_config.json + adapter_model.safetensors)");
            } else if (!Files.isRegularFile(adapter.resolve("adapter_config.json"))) {
                binder.problem("model.adapter", "no PEFT adapter at " + adapter + " (" + (Files.isDirectory(adapter)
                        ? "adapter_config.json missing" : "no such directory") + ")");
            } else {
                Path adapterConfig = adapter.resolve(PeftAdapter.CONFIG_FILE);
                try {
                    if (!new ObjectMapper().readTree(adapterConfig.toFile()).isObject()) {
                        binder.problem("model.adapter", adapterConfig + ": expected a JSON object");
                    }
                } catch (JsonProcessingException e) {
                    binder.problem("model.adapter", adapterConfig + ": not valid JSON: " + e.getOriginalMessage()
                            + " (line " + e.getLocation().getLineNr() + ")");
                } catch (IOException e) {
                    binder.problem("model.adapter", adapterConfig + ": cannot be read: " + e.getMessage());
                }
                checkWeightHeaders("model.adapter", adapter, PeftAdapter.WEIGHTS_FILE, binder);
            }
        }
        return config;
    }

    /**
     * The safetensors headers of a model or adapter, checked against their files' sizes: a cut or damaged download
     * stops validate and train here, not after the data is tokenized and the weights begin to load. Only where the
     * weights are there: a missing or pickle file gets the loader's own message.
     */
    private static void checkWeightHeaders(String key, Path dir, String single, RecordBinder binder) {
        boolean sharded = Files.isRegularFile(dir.resolve(single + ".index.json"));
        if (!sharded && !Files.isRegularFile(dir.resolve(single))) {
            return;
        }
        try (SafetensorsReader weights = SafetensorsReader.open(sharded ? dir : dir.resolve(single))) {
            // opened: every header parsed, every tensor's bytes inside its file
        } catch (RuntimeException e) {
            binder.problem(key, e.getMessage());
        }
    }

    private static String describeModel(Recipe.Model model) {
        return model.preset() != null ? "preset " + model.preset()
                : Path.of(model.path(), "config.json").toString();
    }

    /**
     * What the model's shapes allow: no LoRA rank above a targeted layer's smaller dimension (its update B A has rank
     * min(in, out) at most, so a larger r only adds parameters), and no sample longer than the model's positions.
     */
    private static void checkAgainstModel(ModelConfig config, String modelName, Recipe.Lora lora, DataConfig data,
            RecordBinder binder) {
        if (lora != null) {
            LoraConfig adapter = lora.toConfig();
            // key (lora.r or lora.rank_pattern.X) -> "q_proj [64, 64]" for each module kind whose rank it sets too high
            Map<String, Set<String>> tooSmall = new LinkedHashMap<>();
            Map<String, Long> largestAllowed = new HashMap<>();
            MistralCheckpoint.linearShapes(config).forEach((name, shape) -> {
                long smaller = Math.min(shape[0], shape[1]);
                if (!adapter.targets(name) || adapter.rankOf(name) <= smaller) {
                    return;
                }
                String patternKey = adapter.rankPatternKey(name);
                String key = patternKey == null ? "lora.r" : "lora.rank_pattern." + patternKey;
                tooSmall.computeIfAbsent(key, k -> new LinkedHashSet<>()).add(name.substring(name.lastIndexOf('.') + 1)
                        + " " + Arrays.toString(shape));
                largestAllowed.merge(key, smaller, Math::min);
            });
            tooSmall.forEach((key, modules) -> binder.problem(key, "rank " + (key.equals("lora.r") ? lora.r()
                    : lora.rankPattern().get(key.substring("lora.rank_pattern.".length()))) + " exceeds the smaller "
                    + "dimension of " + String.join(", ", modules) + " in " + modelName + ": the update B A has rank "
                    + "min(in, out) at most, so a larger rank adds parameters, not capacity; use at most "
                    + largestAllowed.get(key) + (key.equals("lora.r") ? " (or lower those layers in rank_pattern)"
                    : "")));
            for (String name : MistralCheckpoint.linearShapes(config).keySet()) {
                try {
                    if (adapter.targets(name)) {
                        adapter.checkDoraTarget(name);
                    }
                } catch (IllegalArgumentException e) {
                    binder.problem("lora.use_dora", e.getMessage() + " (targets " + lora.targets() + ")");
                    break;
                }
            }
            try {
                PeftAdapter.checkWritable(adapter, MistralCheckpoint.linearShapes(config).keySet().stream()
                        .filter(adapter::targets).toList());
            } catch (IllegalArgumentException e) {
                // the patterns PEFT cannot hold on fused experts: at the one map that has any, else at lora
                binder.problem(lora.alphaPattern().isEmpty() ? "lora.rank_pattern"
                        : lora.rankPattern().isEmpty() ? "lora.alpha_pattern" : "lora", e.getMessage());
            }
        }
        if (data != null && data.maxSeqLen() > config.maxPositionEmbeddings()) {
            binder.problem("data.max_seq_len", data.maxSeqLen() + " exceeds max_position_embeddings "
                    + config.maxPositionEmbeddings() + " of " + modelName + ": the model has no position beyond it");
        }
    }

    /**
     * grpo reads the grpo section and rloo the rloo section, never the other: a key the user set in the other would be
     * silently ignored (an rloo recipe written from the GRPO quickstart keeps its grpo: section). A key at its default
     * changes nothing and is let be: a run's recipe.yaml holds both sections, and must read back as a recipe.
     */
    private static void checkOtherPolicyGradientSection(String method, RecordBinder binder) {
        boolean rloo = method.equals("rloo");
        String other = rloo ? "grpo" : "rloo";
        Class<? extends Record> otherType = rloo ? GrpoConfig.class : RlooConfig.class;
        List<String> taken = Arrays.stream((rloo ? RlooConfig.class : GrpoConfig.class).getRecordComponents())
                .map(component -> RecordBinder.snakeCase(component.getName())).toList();
        Map<String, String> notOffered = rloo ? RlooConfig.NOT_OFFERED : GrpoConfig.NOT_OFFERED;
        String config = rloo ? "RLOOConfig" : "GRPOConfig";
        Record set = binder.section(other, otherType);
        YamlTree defaultsTree = resource(DEFAULTS);
        Record defaults = new RecordBinder(defaultsTree, DEFAULTS).bind(otherType, defaultsTree.root.get(other), other);
        for (String key : binder.userSetKeys(other)) {
            if (set != null && defaults != null && sameValue(set, defaults, key)) {
                continue;
            }
            String why = notOffered.get(method + "." + key);
            String instead = taken.contains(key) ? "put it under " + method + " (" + method + "." + key + ")"
                    : why == null || why.startsWith(config + " has no such key") ? config + " has no such key: drop it"
                    : method + "." + key + " is not offered either (" + why + "): drop it";
            binder.problem(other + "." + key, "is read by train.method " + other + " only, and this recipe's is "
                    + method + ": " + instead);
        }
    }

    /** Whether the component named {@code key} (snake_case) holds the same value in both records. */
    private static boolean sameValue(Record a, Record b, String key) {
        for (var component : a.getClass().getRecordComponents()) {
            if (RecordBinder.snakeCase(component.getName()).equals(key)) {
                try {
                    return java.util.Objects.equals(component.getAccessor().invoke(a),
                            component.getAccessor().invoke(b));
                } catch (ReflectiveOperationException e) {
                    throw new IllegalStateException(e);
                }
            }
        }
        return false;
    }

    /** What the dpo method asks of the other sections. */
    private static void checkDpo(DataConfig data, Recipe.Dpo dpo, RecordBinder binder) {
        if (dpo == null || data == null) {
            return;
        }
        List<String> stageFiles = dpo.stageFiles();
        if (!stageFiles.isEmpty() && !new HashSet<>(stageFiles).equals(new HashSet<>(data.files()))) {
            binder.problem("dpo.stages", "lists the stage files " + stageFiles + " but data.files is "
                    + data.files() + ": data.files names all the training pairs, dpo.stages the file each "
                    + "stage trains on, so both list the same files");
        }
    }

    private static void checkFilesExist(List<String> files, String key, RecordBinder binder) {
        for (int i = 0; i < files.size(); i++) {
            Path file = DataConfig.file(files.get(i));
            if (Files.isDirectory(file)) {
                binder.problem(key + "[" + i + "]", files.get(i) + " is a directory, expected a data file (JSONL or "
                        + "JSON, plain or gzip)");
            } else if (!Files.isRegularFile(file)) {
                binder.problem(key + "[" + i + "]", "no such file " + files.get(i) + " (paths are relative to the "
                        + "directory mixtune runs in: " + Path.of("").toAbsolutePath() + "; the jar also holds "
                        + "data/samples/)");
            }
        }
    }

    private static final ObjectMapper YAML_WRITER = new ObjectMapper(new YAMLFactory()
            .disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER)
            .enable(YAMLGenerator.Feature.MINIMIZE_QUOTES))
            .setPropertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE);

    /**
     * The recipe with some values changed: {@code edit} changes its tree as {@link #toYaml} writes it, which is then
     * bound and checked as a recipe file is (a problem is named at {@code name}'s line).
     */
    public static Recipe edited(Recipe recipe, String name, Consumer<ObjectNode> edit) {
        ObjectNode tree = YAML_WRITER.valueToTree(recipe);
        edit.accept(tree);
        YamlTree yaml;
        try {
            yaml = YamlTree.parse(new StringReader(YAML_WRITER.writeValueAsString(tree)), name);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        RecordBinder binder = new RecordBinder(yaml, name);
        Recipe edited = binder.bind(Recipe.class, yaml.root, "");
        check(binder);
        binder.throwIfAny();
        return edited;
    }

    /** The recipe as YAML with every default filled in: what a run writes next to its outputs. */
    public static String toYaml(Recipe recipe) {
        try {
            ObjectNode tree = YAML_WRITER.valueToTree(recipe);
            return YAML_WRITER.writeValueAsString(tree);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
