package io.mixtune.trainer.run;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What --resume counts as a changed recipe, on the quickstart's resolved recipe. */
class RunDirectoryTest {
    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory());

    private static Map<String, String> quickstart(String... overrides) throws Exception {
        String yaml = RecipeReader.toYaml(RecipeReader.read(Path.of("../recipes/quickstart.yaml"), List.of(overrides))
                .recipe());
        return RunDirectory.flatten(YAML.readTree(yaml));
    }

    /**
     * A run started by an older mixtune has a recipe.yaml without the keys added since: holding their defaults now
     * they are no change, so the run resumes; set to anything else they are named.
     */
    @Test
    void keysAddedSinceTheRunStartedAreNoChangeAtTheirDefaults() throws Exception {
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        List<String> added = List.of("dpo.stage_order", "dpo.margin_model", "train.eval_prompts",
                "train.eval_max_new_tokens");
        added.forEach(older::remove);
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));

        Map<String, String> margin = quickstart("dpo.stage_order=margin");
        assertEquals(List.of("dpo.stage_order: (not set) -> margin"), RunDirectory.changedKeys(older, margin));
        assertEquals(List.of("dpo.stage_order: file -> margin"), RunDirectory.changedKeys(now, margin));
    }

    /**
     * An rloo run started as the README said before quickstart-rloo.yaml (the GRPO quickstart with train.method rloo)
     * holds the grpo section it never read; that section is now refused in an rloo recipe, so the resumed recipe drops
     * it: no change, as the section trains nothing. The section the method reads stays compared.
     */
    @Test
    void theSectionAPolicyGradientMethodDoesNotReadIsNoChangeOnResume() throws Exception {
        Map<String, String> started = RunDirectory.flatten(YAML.readTree(RecipeReader.toYaml(RecipeReader.read(
                Path.of("../recipes/quickstart-rloo.yaml"), List.of()).recipe())));
        started.put("grpo.num_generations", "4");
        started.put("grpo.max_completion_length", "12");
        Map<String, String> now = RunDirectory.flatten(YAML.readTree(RecipeReader.toYaml(RecipeReader.read(
                Path.of("../recipes/quickstart-rloo.yaml"), List.of()).recipe())));
        assertEquals(List.of(), RunDirectory.changedKeys(started, now));
        now.put("rloo.beta", "0.1");
        assertEquals(List.of("rloo.beta: 0.05 -> 0.1"), RunDirectory.changedKeys(started, now));
    }

    /**
     * eval_every and save_every may change on resume, except where the run keeps the best checkpoint or stops early:
     * there they decide which evaluation is best and where the run stops; the new keys themselves are named when
     * changed, and are no change at their defaults for a run started before them.
     */
    @Test
    void cadencesAreRefusedOnResumeOnceTheBestCheckpointIsKept() throws Exception {
        assertEquals(List.of(), RunDirectory.changedKeys(quickstart(), quickstart("train.eval_every=5")));
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        List.of("train.load_best_model_at_end", "train.metric_for_best_model", "train.greater_is_better",
                "train.early_stopping_patience", "train.early_stopping_threshold")
                .forEach(key -> assertTrue(older.remove(key) != null, key));
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        assertEquals(List.of("train.eval_every: 25 -> 5"), RunDirectory.changedKeys(
                quickstart("train.early_stopping_patience=2"), quickstart("train.early_stopping_patience=2",
                        "train.eval_every=5", "train.save_every=25")));
        assertEquals(List.of("train.save_every: 25 -> 50", "train.load_best_model_at_end: true -> false"),
                RunDirectory.changedKeys(quickstart("train.load_best_model_at_end=true"),
                        quickstart("train.save_every=50")));
        assertEquals(List.of(), RunDirectory.changedKeys(quickstart("train.metric_for_best_model=loss"),
                quickstart("train.metric_for_best_model=loss", "train.keep_last=1")));
    }

    /**
     * data.packing_strategy changes the rows: a run started before the key resumes at bfd (what it packed as), and a
     * change is named.
     */
    @Test
    void packingStrategyIsNoChangeAtItsDefaultAndNamedWhenChanged() throws Exception {
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        assertTrue(older.remove("data.packing_strategy") != null);
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        assertEquals(List.of("data.packing_strategy: (not set) -> bfd_split"),
                RunDirectory.changedKeys(older, quickstart("data.packing_strategy=bfd_split")));
        assertEquals(List.of("data.packing_strategy: bfd -> wrapped"),
                RunDirectory.changedKeys(now, quickstart("data.packing_strategy=wrapped")));
    }

    /**
     * data.packing_fit: a run recorded before the key packed bfd first fit, so its absence reads first_fit (no change
     * for a run resumed so, RunDirectory#asStarted), and best_fit, the default, is no change either (a method that never
     * packs); a change between the two recorded values is named.
     */
    @Test
    void packingFitAbsentReadsFirstFitAndAChangeIsNamed() throws Exception {
        Map<String, String> now = quickstart();
        assertEquals("best_fit", now.get("data.packing_fit"));
        Map<String, String> older = new LinkedHashMap<>(now);
        assertTrue(older.remove("data.packing_fit") != null);
        assertEquals(List.of(), RunDirectory.changedKeys(older, quickstart("data.packing_fit=first_fit")));
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        assertEquals(List.of("data.packing_fit: best_fit -> first_fit"),
                RunDirectory.changedKeys(now, quickstart("data.packing_fit=first_fit")));
    }

    /** lora.use_dora changes what trains: a run started before the key resumes at false, and a change is named. */
    @Test
    void useDoraIsNoChangeAtItsDefaultAndNamedWhenChanged() throws Exception {
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        assertTrue(older.remove("lora.use_dora") != null);
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        Map<String, String> dora = new LinkedHashMap<>(now);
        dora.put("lora.use_dora", "true"); // the quickstart's Mixtral experts take no DoRA: the key alone
        assertEquals(List.of("lora.use_dora: false -> true"), RunDirectory.changedKeys(now, dora));
    }

    /**
     * train.router_aux_loss_coef weighs a term of the loss: a run started before the key resumes at null (the config's
     * coefficient, what it trained with), and a changed coefficient is named.
     */
    @Test
    void routerAuxLossCoefIsNoChangeAtItsDefaultAndNamedWhenChanged() throws Exception {
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        assertTrue(older.remove("train.router_aux_loss_coef") != null);
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        assertEquals(List.of("train.router_aux_loss_coef: null -> 0.001"), RunDirectory.changedKeys(now,
                quickstart("train.router_aux_loss_coef=0.001")));
        assertEquals(List.of("train.router_aux_loss_coef: (not set) -> 0.5"), RunDirectory.changedKeys(older,
                quickstart("train.router_aux_loss_coef=0.5")));
    }

    /**
     * The rate is a function of the step and the schedule's train keys alone, which --resume recomputes from the
     * recipe: the keys of transformers' schedule kwargs are no change at their defaults (a run started before them
     * resumes), and a changed one is named, so a resumed run cannot move to another schedule.
     */
    @Test
    void scheduleKwargsAreNoChangeAtTheirDefaultsAndNamedWhenChanged() throws Exception {
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        List.of("train.num_cycles", "train.power", "train.lr_end", "train.timescale", "train.num_stable_steps",
                "train.num_decay_steps", "train.warmup_type", "train.decay_type", "train.warmup_lr_rate")
                .forEach(key -> assertTrue(older.remove(key) != null, key));
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        assertEquals(List.of("train.power: 2.0 -> 3.0"),
                RunDirectory.changedKeys(quickstart("train.schedule=polynomial", "train.power=2"),
                        quickstart("train.schedule=polynomial", "train.power=3")));
    }

    /**
     * LoRA+'s factors are a function of the parameters' names and these keys, which --resume recomputes: a run started
     * before them resumes (null and 1e-6 are their defaults), and a changed ratio or embedding rate is named.
     */
    @Test
    void loraPlusKeysAreNoChangeAtTheirDefaultsAndNamedWhenChanged() throws Exception {
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        List.of("train.loraplus_lr_ratio", "train.loraplus_lr_embedding")
                .forEach(key -> assertTrue(older.remove(key) != null, key));
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        assertEquals(List.of("train.loraplus_lr_ratio: null -> 16.0"),
                RunDirectory.changedKeys(now, quickstart("train.loraplus_lr_ratio=16")));
        assertEquals(List.of("train.loraplus_lr_embedding: 1.0E-6 -> 1.0E-5"),
                RunDirectory.changedKeys(quickstart("train.loraplus_lr_ratio=16"),
                        quickstart("train.loraplus_lr_ratio=16", "train.loraplus_lr_embedding=1e-5")));
    }

    /**
     * A recipe.yaml written before dpo.loss took a list has {@code loss: sigmoid}; the resolved recipe now has the one
     * loss as a list of one. Same loss, so every run started before (SFT ones too: the dpo section is always written)
     * resumes; another loss, or a second one, is named.
     */
    @Test
    void aDpoLossWrittenAsOneNameIsNoChangeFromTheListOfIt() throws Exception {
        Map<String, String> now = quickstart();
        Map<String, String> older = new LinkedHashMap<>(now);
        older.put("dpo.loss", "sigmoid");
        older.remove("dpo.loss_weights");
        older.remove("dpo.discopop_tau");
        assertEquals(List.of(), RunDirectory.changedKeys(older, now));
        assertEquals(List.of(), RunDirectory.changedKeys(now, quickstart("dpo.loss=sigmoid")));
        assertEquals(1, RunDirectory.changedKeys(older, quickstart("dpo.loss=ipo")).size());
        assertEquals(1, RunDirectory.changedKeys(older, quickstart("dpo.loss=[sigmoid, bco_pair]")).size());
    }

    /** The first pattern key that matches a module decides (PEFT's rule), so reordered patterns are another recipe. */
    @Test
    void reorderedLoraPatternsAreAChange() throws Exception {
        // --set merges into the quickstart's {lm_head: 64}: lm_head stays first
        Map<String, String> first = quickstart("lora.rank_pattern={q_proj: 8, v_proj: 4}");
        Map<String, String> swapped = quickstart("lora.rank_pattern={v_proj: 4, q_proj: 8}");
        assertEquals(List.of("lora.rank_pattern: {\"lm_head\":64,\"q_proj\":8,\"v_proj\":4} -> "
                + "{\"lm_head\":64,\"v_proj\":4,\"q_proj\":8}"), RunDirectory.changedKeys(first, swapped));
        assertEquals(List.of(), RunDirectory.changedKeys(first, quickstart("lora.rank_pattern={q_proj: 8, v_proj: 4}")));
    }

    /**
     * --resume with nothing in output_dir to continue (missing, or empty of recipe.yaml and checkpoints) is refused
     * by RunDirectory itself, output_dir not created: WARM runs, which open it without Training's own checks, made
     * output_dir and started afresh.
     */
    @Test
    void resumeWithNoRunInOutputDirIsRefusedAndCreatesNothing(@TempDir Path tmp) throws Exception {
        Path missing = tmp.resolve("missing");
        Recipe recipe = RecipeReader.read(Path.of("../recipes/quickstart.yaml"), List.of("output_dir=" + missing))
                .recipe();
        Refusal refused = assertThrows(Refusal.class, () -> RunDirectory.open(recipe, RunDirectory.Start.RESUME, null));
        assertTrue(refused.getMessage().contains("--resume: output_dir " + missing + " holds no run to continue"),
                refused.getMessage());
        assertFalse(Files.exists(missing));

        Path empty = Files.createDirectories(tmp.resolve("empty"));
        Recipe inEmpty = RecipeReader.read(Path.of("../recipes/quickstart.yaml"), List.of("output_dir=" + empty))
                .recipe();
        assertThrows(Refusal.class, () -> RunDirectory.open(inEmpty, RunDirectory.Start.RESUME, null));
        try (var entries = Files.list(empty)) {
            assertEquals(0, entries.count(), "not even the lock file");
        }

        Path warmDir = tmp.resolve("warm");
        Refusal warm = assertThrows(Refusal.class, () -> Training.load(Path.of("../recipes/warm-reward.yaml"),
                "output_dir=" + warmDir).resume().run());
        assertTrue(warm.getMessage().contains("holds no run to continue"), warm.getMessage());
        assertFalse(Files.exists(warmDir));
    }
}
