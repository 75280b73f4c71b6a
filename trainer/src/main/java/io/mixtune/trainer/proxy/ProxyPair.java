package io.mixtune.trainer.proxy;

import ai.djl.ndarray.NDManager;
import io.mixtune.lora.adapter.LoraModel;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.generate.ProxyTuning;
import io.mixtune.model.mistral.CausalLm;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.InvalidOptionException;
import io.mixtune.trainer.Quantization;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The small pair that proxy-tunes a large model (Liu et al. 2024): an untuned base, and its tuned version as a
 * checkpoint of its own or as the base plus a PEFT adapter; the large model's logits become large + alpha (tuned -
 * base). {@link #check} reads the small models' files against the large one before any weight loads; {@link #load}
 * loads them beside it.
 *
 * @param tuned the tuned checkpoint, or null when {@code adapter} makes the tuned model
 * @param adapter a PEFT adapter on {@code base}, or null when {@code tuned} is given
 * @param quantization how the small models load; null: as the large model does
 */
public record ProxyPair(Path base, Path tuned, Path adapter, double alpha, Quantization quantization) {
    public ProxyPair {
        Objects.requireNonNull(base, "base");
        if ((tuned == null) == (adapter == null)) {
            throw new InvalidOptionException("proxy-base", "--proxy-base needs exactly one of --proxy-tuned (a tuned"
                    + " checkpoint) and --proxy-adapter (a PEFT adapter on --proxy-base)");
        }
    }

    /** A tuned checkpoint beside its base, alpha 1, loaded as the large model is. */
    public static ProxyPair ofTuned(Path base, Path tuned) {
        return new ProxyPair(base, tuned, null, 1.0, null);
    }

    /** The base plus a PEFT adapter as the tuned model, alpha 1, loaded as the large model is. */
    public static ProxyPair ofAdapter(Path base, Path adapter) {
        return new ProxyPair(base, null, adapter, 1.0, null);
    }

    public ProxyPair withAlpha(double newAlpha) {
        return new ProxyPair(base, tuned, adapter, newAlpha, quantization);
    }

    public ProxyPair withQuantization(Quantization newQuantization) {
        return new ProxyPair(base, tuned, adapter, alpha, newQuantization);
    }

    /**
     * Checks the small models against the large one from their files (config.json, tokenizer.json), loading nothing:
     * the same vocab_size, and the same token-to-id map wherever a model has a tokenizer.json.
     */
    public void check(Path largeDir, ModelConfig large) {
        check(largeDir, large, "proxy-base", checkpoint("proxy-base", base));
        if (tuned != null) {
            check(largeDir, large, "proxy-tuned", checkpoint("proxy-tuned", tuned));
        } else {
            InputDirectories.requireAdapter("proxy-adapter", adapter);
        }
        if (!Double.isFinite(alpha)) {
            throw new InvalidOptionException("proxy-alpha", "--proxy-alpha expects a finite number, got " + alpha);
        }
    }

    private static void check(Path largeDir, ModelConfig large, String option, Path smallDir) {
        ModelConfig small;
        try {
            small = ModelConfig.read(smallDir.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new InvalidOptionException(option, "--" + option + " " + smallDir + ": " + e.getMessage(), e);
        }
        if (small.vocabSize() != large.vocabSize()) {
            throw new InvalidOptionException(option, "--" + option + " " + smallDir + ": vocab_size "
                    + small.vocabSize() + " but " + large.vocabSize() + " in --model " + largeDir + ": proxy-tuning"
                    + " adds logits token by token, so the models need one vocabulary");
        }
        Path largeTokenizer = largeDir.resolve("tokenizer.json");
        Path smallTokenizer = smallDir.resolve("tokenizer.json");
        if (Files.isRegularFile(largeTokenizer) != Files.isRegularFile(smallTokenizer)) {
            Path missing = Files.isRegularFile(largeTokenizer) ? smallTokenizer : largeTokenizer;
            throw new InvalidOptionException(option, "--" + option + " " + smallDir + ": " + missing + " is missing,"
                    + " so mixtune cannot check that the models share one tokenizer; copy the model's own"
                    + " tokenizer.json there");
        }
        if (Files.isRegularFile(largeTokenizer)) {
            String difference = vocabularyDifference(largeTokenizer, smallTokenizer);
            if (difference != null) {
                throw new InvalidOptionException(option, "--" + option + " " + smallDir + ": its tokenizer differs"
                        + " from --model " + largeDir + "'s: " + difference + "; proxy-tuning needs one tokenizer (the"
                        + " same token-to-id map)");
            }
        }
    }

    /** The first token whose id differs between two tokenizer.json files, in words, or null when the maps are equal. */
    static String vocabularyDifference(Path first, Path second) {
        Map<String, Long> a = TextTokenizer.vocabulary(read(first), first.toString());
        Map<String, Long> b = TextTokenizer.vocabulary(read(second), second.toString());
        for (Map.Entry<String, Long> entry : a.entrySet()) {
            Long other = b.get(entry.getKey());
            if (!Objects.equals(entry.getValue(), other)) {
                return "token \"" + entry.getKey() + "\" is id " + entry.getValue() + " in " + first
                        + (other == null ? " but absent from " + second : " but id " + other + " in " + second);
            }
        }
        for (Map.Entry<String, Long> entry : b.entrySet()) {
            if (!a.containsKey(entry.getKey())) {
                return "token \"" + entry.getKey() + "\" is id " + entry.getValue() + " in " + second
                        + " but absent from " + first;
            }
        }
        return null;
    }

    /**
     * Loads the small models beside the large one (on its manager's device); {@link #check} ran before.
     *
     * @param largeQuantization how the large model loaded, the small ones' unless {@link #quantization} says otherwise
     */
    public Loaded load(CausalLm large, NDManager manager, Quantization largeQuantization) {
        MistralCheckpoint.LinearFactory linears = (quantization == null ? largeQuantization : quantization).linears();
        Path baseDir = checkpoint("proxy-base", base);
        List<CausalLm> loaded = new ArrayList<>();
        try {
            CausalLm smallBase = MistralCheckpoint.load(baseDir, manager, linears);
            loaded.add(smallBase);
            CausalLm smallTuned;
            String description;
            if (tuned != null) {
                Path tunedDir = checkpoint("proxy-tuned", tuned);
                smallTuned = MistralCheckpoint.load(tunedDir, manager, linears);
                loaded.add(smallTuned);
                description = "base " + baseDir + ", tuned " + tunedDir;
            } else {
                smallTuned = MistralCheckpoint.load(baseDir, manager, linears);
                loaded.add(smallTuned);
                try {
                    PeftAdapter.load(new LoraModel(smallTuned), adapter, "default");
                } catch (IllegalArgumentException e) {
                    throw new InvalidOptionException("proxy-adapter", "--proxy-adapter " + adapter + ": it does not"
                            + " fit --proxy-base " + baseDir + " (an adapter for another base model?): "
                            + e.getMessage(), e);
                }
                description = "base " + baseDir + ", tuned = base + adapter " + adapter;
            }
            ProxyTuning tuning = new ProxyTuning(large, smallBase, smallTuned, alpha);
            return new Loaded(loaded, tuning, description + ", alpha " + alpha);
        } catch (RuntimeException e) {
            loaded.forEach(CausalLm::close);
            throw e;
        }
    }

    /** The loaded pair with the large model; closing it frees the small models (the large one is the caller's). */
    public static final class Loaded implements AutoCloseable {
        private final List<CausalLm> loaded;
        private final ProxyTuning tuning;
        private final String description;

        private Loaded(List<CausalLm> loaded, ProxyTuning tuning, String description) {
            this.loaded = loaded;
            this.tuning = tuning;
            this.description = description;
        }

        public ProxyTuning tuning() {
            return tuning;
        }

        /** "base DIR, tuned DIR, alpha A", for a report. */
        public String description() {
            return description;
        }

        /** The most positions all three models take. */
        public int maxPositionEmbeddings() {
            return Math.min(tuning.large().config().maxPositionEmbeddings(), Math.min(
                    tuning.smallBase().config().maxPositionEmbeddings(),
                    tuning.smallTuned().config().maxPositionEmbeddings()));
        }

        @Override
        public void close() {
            loaded.forEach(CausalLm::close);
        }
    }

    private static Path checkpoint(String option, Path dir) {
        InputDirectories.requireModel(option, dir);
        return dir;
    }

    private static byte[] read(Path file) {
        try {
            return Files.readAllBytes(file);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + ": " + e.getMessage(), e);
        }
    }
}
