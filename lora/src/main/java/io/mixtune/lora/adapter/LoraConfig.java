package io.mixtune.lora.adapter;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Which linear layers get an adapter and how big it is, with PEFT's meanings: scale = alpha / r (alpha / sqrt(r) with
 * rsLoRA), {@code rankPattern} and {@code alphaPattern} override r and alpha for the modules whose name ends with a
 * match of the key (a regular expression over dotted module names); the first key that matches wins, in the order
 * given (the file's or the recipe's), as PEFT's get_pattern_key takes the first in its dict's order.
 *
 * @param targetModules module names such as q_proj or w1, dotted module paths ending in one (PEFT writes a resolved
 *     all-linear that way: model.layers.0.self_attn.o_proj), or the single entry {@value #ALL_LINEAR}; with
 *     {@link Selection#targetModulesRegex} its single entry is a regular expression over full module names
 * @param selection PEFT's other ways to choose modules, all off by default ({@link Selection#NONE})
 * @param useDora DoRA (Liu et al. 2024, PEFT's use_dora): each adapted layer also trains a magnitude per output row
 *     ({@link LoraLinear#forward})
 */
public record LoraConfig(int r, double alpha, double dropout, List<String> targetModules, boolean useRslora,
        Map<String, Integer> rankPattern, Map<String, Double> alphaPattern, Selection selection, boolean useDora) {

    public static final String ALL_LINEAR = "all-linear";

    /** Every linear layer name in Mistral and Mixtral; {@code gate} is the Mixtral router. */
    public static final Set<String> MODULE_NAMES = Set.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
            "down_proj", "w1", "w2", "w3", "gate", "lm_head");

    /** What all-linear means here: every linear but the lm_head and the router (the router only on request). */
    static final Set<String> ALL_LINEAR_NAMES = Set.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
            "down_proj", "w1", "w2", "w3");

    /**
     * PEFT's check_target_module_exists beyond a list of names: target_modules given as one string (a regex that must
     * match the whole module name, re.fullmatch), exclude_modules (a list of names or dotted suffixes, or one regex),
     * and layers_to_transform with layers_pattern (only the modules of those decoder layers, for a list of targets).
     *
     * @param excludeModules names or dotted suffixes never adapted; with {@code excludeModulesRegex} a single regex
     * @param layersToTransform the layer indices kept, empty for every layer
     * @param layersPattern the names before the layer index (such as "layers"), empty for PEFT's "any name"
     */
    public record Selection(boolean targetModulesRegex, List<String> excludeModules, boolean excludeModulesRegex,
            List<Integer> layersToTransform, List<String> layersPattern) {
        public static final Selection NONE = new Selection(false, List.of(), false, List.of(), List.of());
        private static final Pattern ANY_LAYER_INDEX = Pattern.compile(".*?\\.[^.]*\\.(\\d+)\\.");

        public Selection {
            excludeModules = List.copyOf(excludeModules);
            layersToTransform = List.copyOf(layersToTransform);
            layersPattern = List.copyOf(layersPattern);
            if (excludeModulesRegex) {
                if (excludeModules.size() != 1) {
                    throw new IllegalArgumentException("exclude_modules as a regex is one string");
                }
                compile(excludeModules.get(0), "exclude_modules");
            }
        }

        boolean excludes(String moduleName) {
            if (excludeModulesRegex) {
                return Pattern.compile(excludeModules.get(0)).matcher(moduleName).matches();
            }
            return excludeModules.stream().anyMatch(e -> moduleName.equals(e) || moduleName.endsWith("." + e));
        }

        /**
         * PEFT's layer index: the number after a layers_pattern name (any name when none). PEFT's regex is greedy
         * (the last such number); mixtune takes the first on purpose. They agree on every name PEFT meets on
         * transformers 5 (Mistral's, and Mixtral's fused mlp.experts, which hold one number), while on the Hub's
         * per-expert names (experts.3.w1) the last number is the expert's, not the layer's.
         */
        boolean inLayers(String moduleName) {
            if (layersToTransform.isEmpty()) {
                return true;
            }
            Matcher match = null;
            if (layersPattern.isEmpty()) {
                match = ANY_LAYER_INDEX.matcher(moduleName);
                match = match.lookingAt() ? match : null;
            } else {
                for (String name : layersPattern) {
                    Matcher m = Pattern.compile("(?:^|.*?\\.)" + name + "\\.(\\d+)\\.").matcher(moduleName);
                    if (m.lookingAt()) {
                        match = m;
                        break;
                    }
                }
            }
            return match != null && layersToTransform.contains(Integer.parseInt(match.group(1)));
        }
    }

    /** Plain LoRA (no DoRA). */
    public LoraConfig(int r, double alpha, double dropout, List<String> targetModules, boolean useRslora,
            Map<String, Integer> rankPattern, Map<String, Double> alphaPattern, Selection selection) {
        this(r, alpha, dropout, targetModules, useRslora, rankPattern, alphaPattern, selection, false);
    }

    /** This config with DoRA on or off. */
    public LoraConfig withDora(boolean dora) {
        return new LoraConfig(r, alpha, dropout, targetModules, useRslora, rankPattern, alphaPattern, selection, dora);
    }

    /** The constructor without PEFT's finer selection ({@link Selection#NONE}). */
    public LoraConfig(int r, double alpha, double dropout, List<String> targetModules, boolean useRslora,
            Map<String, Integer> rankPattern, Map<String, Double> alphaPattern) {
        this(r, alpha, dropout, targetModules, useRslora, rankPattern, alphaPattern, Selection.NONE);
    }

    public LoraConfig {
        if (r <= 0) {
            throw new IllegalArgumentException("lora r must be a positive integer, got " + r);
        }
        if (!(alpha > 0)) {
            throw new IllegalArgumentException("lora alpha must be > 0, got " + alpha);
        }
        if (!(dropout >= 0 && dropout < 1)) {
            throw new IllegalArgumentException("lora dropout must lie in [0, 1), got " + dropout);
        }
        if (targetModules == null || targetModules.isEmpty()) {
            throw new IllegalArgumentException("lora target_modules is empty: name modules such as q_proj, or "
                    + ALL_LINEAR);
        }
        targetModules = List.copyOf(targetModules);
        selection = selection == null ? Selection.NONE : selection;
        if (selection.targetModulesRegex()) {
            if (targetModules.size() != 1) {
                throw new IllegalArgumentException("lora target_modules as a regex is one string, got " + targetModules);
            }
            compile(targetModules.get(0), "target_modules");
        }
        for (String target : selection.targetModulesRegex() ? List.<String>of() : targetModules) {
            String leaf = target.substring(target.lastIndexOf('.') + 1);
            if (!MODULE_NAMES.contains(leaf) && !(target.equals(ALL_LINEAR) && targetModules.size() == 1)) {
                throw new IllegalArgumentException("unknown lora target \"" + target + "\": expected " + ALL_LINEAR
                        + " alone, or some of " + new TreeSet<>(MODULE_NAMES));
            }
        }
        rankPattern = ordered(rankPattern);
        alphaPattern = ordered(alphaPattern);
        rankPattern.forEach((key, rank) -> {
            if (rank <= 0) {
                throw new IllegalArgumentException("rank_pattern \"" + key + "\" must be a positive integer, got " + rank);
            }
        });
    }

    public static LoraConfig of(int r, double alpha, List<String> targetModules) {
        return new LoraConfig(r, alpha, 0.0, targetModules, false, Map.of(), Map.of());
    }

    /** A copy that keeps the given order (a HashMap's or Map.of's would change between JVMs), unmodifiable. */
    private static <T> Map<String, T> ordered(Map<String, T> patterns) {
        Map<String, T> copy = new LinkedHashMap<>();
        if (patterns != null) {
            patterns.forEach((key, value) -> copy.put(Objects.requireNonNull(key), Objects.requireNonNull(value,
                    () -> "pattern \"" + key + "\" has no value")));
        }
        return Collections.unmodifiableMap(copy);
    }

    private static void compile(String regex, String field) {
        try {
            Pattern.compile(regex);
        } catch (PatternSyntaxException e) {
            throw new IllegalArgumentException("lora " + field + " \"" + regex + "\" is not a valid regular expression: "
                    + e.getDescription());
        }
    }

    /**
     * Whether a full module name such as model.layers.0.block_sparse_moe.experts.3.w1 gets an adapter: PEFT's rule,
     * the name equals a target or ends with "." + target (or matches the whole regex), within
     * {@link Selection#layersToTransform} and not excluded.
     */
    public boolean targets(String moduleName) {
        return targets(moduleName, name -> ALL_LINEAR_NAMES.contains(name.substring(name.lastIndexOf('.') + 1)));
    }

    /** {@link #targets} with {@code allLinear} saying what {@value #ALL_LINEAR} takes. */
    boolean targets(String moduleName, Predicate<String> allLinear) {
        if (selection.excludes(moduleName)) {
            return false;
        }
        if (selection.targetModulesRegex()) {
            return Pattern.compile(targetModules.get(0)).matcher(moduleName).matches();
        }
        boolean named = targetModules.equals(List.of(ALL_LINEAR)) ? allLinear.test(moduleName)
                : targetModules.stream().anyMatch(t -> moduleName.equals(t) || moduleName.endsWith("." + t));
        return named && selection.inLayers(moduleName);
    }

    /**
     * Throws where DoRA is on and PEFT 0.21 refuses it for {@code moduleName}: on transformers 5 it holds the Mixtral
     * experts and router as fused parameters, adapted by a lora.ParamWrapper that "does not work with use_dora=True"
     * (tuners/lora/layer.py). A Hub per-expert name (experts.3.w1) or the router (block_sparse_moe.gate) is such a
     * module; Mistral's linears, Mixtral's attention and the lm_head take DoRA.
     */
    public void checkDoraTarget(String moduleName) {
        if (!useDora) {
            return;
        }
        String leaf = moduleName.substring(moduleName.lastIndexOf('.') + 1);
        boolean expert = moduleName.contains(".experts.") && Set.of("w1", "w2", "w3").contains(leaf);
        boolean router = moduleName.endsWith("block_sparse_moe.gate") || moduleName.endsWith("mlp.gate");
        if (expert || router) {
            throw new IllegalArgumentException("DoRA (use_dora) cannot go on " + moduleName + ": PEFT 0.21 holds the "
                    + "Mixtral " + (expert ? "experts" : "router") + " as fused parameters, whose lora.ParamWrapper "
                    + "does not work with use_dora=True; with DoRA target the attention (q_proj, k_proj, v_proj, "
                    + "o_proj) or lm_head, or turn use_dora off");
        }
    }

    public int rankOf(String moduleName) {
        Integer rank = patternValue(rankPattern, moduleName);
        return rank == null ? r : rank;
    }

    /** The rank_pattern key that sets {@code moduleName}'s rank, or null when it has the default rank r. */
    public String rankPatternKey(String moduleName) {
        for (String key : rankPattern.keySet()) {
            if (patternMatches(key, moduleName)) {
                return key;
            }
        }
        return null;
    }

    public double alphaOf(String moduleName) {
        Double value = patternValue(alphaPattern, moduleName);
        return value == null ? alpha : value;
    }

    public double scaleOf(String moduleName) {
        double rank = rankOf(moduleName);
        return alphaOf(moduleName) / (useRslora ? Math.sqrt(rank) : rank);
    }

    /** PEFT's rule: the first key whose regex matches the end of the name at a dot boundary. */
    private static <T> T patternValue(Map<String, T> patterns, String moduleName) {
        for (Map.Entry<String, T> entry : patterns.entrySet()) {
            if (patternMatches(entry.getKey(), moduleName)) {
                return entry.getValue();
            }
        }
        return null;
    }

    /** Whether a rank_pattern or alpha_pattern key covers a module: PEFT's re.match(rf"(.*\.)?({key})$", name). */
    static boolean patternMatches(String key, String moduleName) {
        return Pattern.compile("(.*\\.)?(" + key + ")$").matcher(moduleName).matches();
    }
}
