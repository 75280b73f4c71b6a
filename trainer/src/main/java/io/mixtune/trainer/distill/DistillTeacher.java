package io.mixtune.trainer.distill;

import ai.djl.Device;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.types.DataType;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.WithoutGrad;
import io.mixtune.trainer.PresetCheckpoint;
import io.mixtune.trainer.recipe.Distillation;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.run.CachedPreset;
import io.mixtune.trainer.run.CausalLmLoss;
import io.mixtune.trainer.run.TrainingBatch;
import io.mixtune.trainer.run.TrainingData;
import io.mixtune.trainer.run.TrainingModel;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.OptionalLong;

/**
 * The frozen teacher of a distillation run: its checkpoint (or a tiny preset written once to output_dir/teacher-model),
 * dense or NF4, in the student's compute dtype on the student's device, optionally with a PEFT adapter, always in
 * evaluation mode. Its forward passes run without autograd (TRL's torch.no_grad), and what a micro-batch needs of it,
 * the final hidden states at the completion positions, lives in the caller's manager, freed with the micro-batch.
 */
public final class DistillTeacher implements AutoCloseable {
    private static final String TEACHER_KEY = "distillation.teacher_model_name_or_path";
    private static final ObjectMapper JSON = new ObjectMapper();

    private final NDManager manager;
    private final CausalLm model;

    private DistillTeacher(NDManager manager, CausalLm model) {
        this.manager = manager;
        this.model = model;
    }

    /** The teacher's checkpoint folder: teacher_model_name_or_path, or output_dir/teacher-model for a preset. */
    public static Path dir(Recipe recipe) {
        Distillation distillation = recipe.distillation();
        return distillation.teacherModelNameOrPath() != null ? Path.of(distillation.teacherModelNameOrPath())
                : Path.of(recipe.outputDir(), TrainingData.TEACHER_MODEL_DIR);
    }

    /** The teacher's config.json (a preset's own shapes before it is written). */
    public static ModelConfig config(Recipe recipe) {
        Distillation distillation = recipe.distillation();
        if (distillation.teacherPreset() != null) {
            return ModelPreset.load(distillation.teacherPreset());
        }
        return ModelConfig.read(dir(recipe).resolve("config.json"));
    }

    /**
     * Refuses, before anything loads, a teacher that cannot teach this student: none named, a preset of shapes only,
     * or another vocabulary or tokenizer (the divergence compares the two distributions token id by token id, as
     * TRL's DistillationTrainer requires a shared vocab_size; here the tokenizer.json must be the same bytes too).
     */
    public static void check(Recipe recipe) {
        Distillation distillation = recipe.distillation();
        if (distillation.teacherModelNameOrPath() == null && distillation.teacherPreset() == null) {
            throw new RecipeValueException(TEACHER_KEY, "train.method distillation needs a teacher: a checkpoint "
                    + "folder here, or distillation.teacher_preset");
        }
        if (distillation.teacherPreset() != null && ModelPreset.load(distillation.teacherPreset()).parameterCount()
                > PresetCheckpoint.MAX_MATERIALISED_PARAMETERS) {
            throw new RecipeValueException("distillation.teacher_preset", distillation.teacherPreset() + " holds the "
                    + "model's shapes (for memory plans), not weights: give the checkpoint as "
                    + "distillation.teacher_model_name_or_path");
        }
        String key = distillation.teacherPreset() != null ? "distillation.teacher_preset" : TEACHER_KEY;
        Path teacherDir = dir(recipe);
        if (distillation.teacherPreset() == null && !Files.isRegularFile(teacherDir.resolve("config.json"))) {
            throw new RecipeValueException(key, "no Hugging Face checkpoint at " + teacherDir + " ("
                    + (Files.isDirectory(teacherDir) ? "config.json missing" : "no such directory") + ")");
        }
        if (distillation.teacherAdapter() != null
                && !Files.isRegularFile(Path.of(distillation.teacherAdapter(), PeftAdapter.CONFIG_FILE))) {
            throw new RecipeValueException("distillation.teacher_adapter", "no PEFT adapter at "
                    + distillation.teacherAdapter() + " (" + PeftAdapter.CONFIG_FILE + " missing)");
        }
        ModelConfig teacher;
        TokenizerFile teacherTokenizer;
        try {
            teacher = config(recipe);
            teacherTokenizer = TrainingData.tokenizer(teacherDir, teacher, distillation.teacherPreset() != null);
        } catch (IllegalArgumentException | UncheckedIOException e) {
            throw new RecipeValueException(key, e.getMessage());
        }
        TokenizerFile studentTokenizer = TrainingData.tokenizer(recipe);
        ModelConfig student = studentConfig(recipe);
        if (teacher.vocabSize() != student.vocabSize()) {
            throw new RecipeValueException(key, "the teacher (" + teacherDir + ") has vocab_size "
                    + teacher.vocabSize() + " and the student (" + describeStudent(recipe) + ") "
                    + student.vocabSize() + ": distillation compares the two next-token distributions id by id and "
                    + "needs one vocabulary (TRL refuses it too; its GOLD trainer distills across tokenizers)");
        }
        if (!sameTokenizer(teacherTokenizer.json(), studentTokenizer.json())) {
            throw new RecipeValueException(key, "the teacher's tokenizer " + teacherTokenizer.name() + " differs from "
                    + "the student's " + studentTokenizer.name() + ": distillation compares the two next-token "
                    + "distributions id by id, so both must tokenize alike; use a teacher of the student's family "
                    + "(the tiny presets share Mistral v1's tokenizer)");
        }
    }

    /**
     * The same tokenizer.json content, whatever its formatting (a file saved again by another tool), less what does not
     * change which token an id stands for or how text is split: truncation and padding (settings of a call), and
     * added_tokens entries that restate a vocabulary token at its own id (mixtune's copy of a preset's tokenizer for
     * transformers declares {@code <unk>}, {@code <s>}, {@code </s>} so; TrainingData reads such a copy as the
     * preset's).
     */
    static boolean sameTokenizer(byte[] a, byte[] b) {
        if (Arrays.equals(a, b)) {
            return true;
        }
        try {
            return comparable(JSON.readTree(a)).equals(comparable(JSON.readTree(b)));
        } catch (IOException e) {
            return false;
        }
    }

    private static JsonNode comparable(JsonNode tokenizer) {
        if (!(tokenizer instanceof ObjectNode root)) {
            return tokenizer;
        }
        root.remove(List.of("truncation", "padding"));
        JsonNode vocab = root.path("model").path("vocab");
        if (root.get("added_tokens") instanceof ArrayNode added) {
            ArrayNode kept = root.putArray("added_tokens");
            for (JsonNode entry : added) {
                JsonNode id = vocab.get(entry.path("content").asText());
                if (!(vocab.isObject() && id != null && id.asLong() == entry.path("id").asLong(-1))) {
                    kept.add(entry);
                }
            }
        }
        return root;
    }

    private static ModelConfig studentConfig(Recipe recipe) {
        Path dir = TrainingData.baseModelDir(recipe);
        return Files.isRegularFile(dir.resolve("config.json")) ? ModelConfig.read(dir.resolve("config.json"))
                : ModelPreset.load(recipe.model().preset());
    }

    private static String describeStudent(Recipe recipe) {
        return recipe.model().path() != null ? recipe.model().path() : "preset " + recipe.model().preset();
    }

    /** Loads the teacher (writing a preset first) on {@code device} in {@code computeType}. */
    public static DistillTeacher load(Recipe recipe, Device device, DataType computeType) {
        Distillation distillation = recipe.distillation();
        Path teacherDir = dir(recipe);
        if (distillation.teacherPreset() != null) {
            CachedPreset.ensure("distillation.teacher_preset", distillation.teacherPreset(), teacherDir);
        }
        NDManager manager = NDManager.newBaseManager(device);
        CausalLm model = MistralCheckpoint.load(teacherDir, manager,
                TrainingModel.linears(distillation.teacherQuantizeOr(recipe.model().quantize())), computeType);
        if (distillation.teacherAdapter() != null) {
            LoraModel lora = new LoraModel(model);
            PeftAdapter.load(lora, Path.of(distillation.teacherAdapter()), TrainingModel.ADAPTER_NAME);
            lora.setTraining(false); // no dropout: TRL keeps the teacher in eval mode
        }
        return new DistillTeacher(manager, model);
    }

    /** A teacher already loaded (with its adapter in evaluation mode, if any); closing it closes both. */
    static DistillTeacher of(NDManager manager, CausalLm model) {
        return new DistillTeacher(manager, model);
    }

    public CausalLm model() {
        return model;
    }

    /**
     * The teacher's final hidden states at the positions that predict the batch's targets [targets, hidden], in the
     * row-major order of {@link CausalLmLoss#predictingStates}, computed without autograd and kept in {@code out}
     * (everything else of the pass is freed at once).
     */
    NDArray predictingStates(TrainingBatch batch, NDManager out) {
        return WithoutGrad.get(() -> {
            try (NDManager pass = out.newSubManager()) {
                CausalLmLoss.Forward forward = CausalLmLoss.forward(model, batch, pass, OptionalLong.empty());
                NDArray states = CausalLmLoss.predictingStates(forward.states(), batch, pass);
                states.attach(out);
                return states;
            }
        });
    }

    /** float32 logits [rows, vocab] of predicting states, without autograd. */
    NDArray logits(NDArray states) {
        return WithoutGrad.get(() -> Casts.to(model.logits(states), DataType.FLOAT32));
    }

    @Override
    public void close() {
        model.close();
        manager.close();
    }
}
