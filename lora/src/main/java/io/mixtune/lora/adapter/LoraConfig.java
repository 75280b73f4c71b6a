package io.mixtune.lora.adapter;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Pattern;

/**
 * Which linear layers get an adapter and how big it is, with PEFT's meanings: scale = alpha / r (alpha / sqrt(r) with
 * rsLoRA), {@code rankPattern} and {@code alphaPattern} override r and alpha for the modules whose name ends with a
 * match of the key (a regular expression over dotted module names).
 *
 * @param targetModules module names such as q_proj or w1, dotted module paths ending in one (PEFT writes a resolved
 *     all-linear that way: model.layers.0.self_attn.o_proj), or the single entry {@value #ALL_LINEAR}
 */
public record LoraConfig(int r, double alpha, double dropout, List<String> targetModules, boolean useRslora,
        Map<String, Integer> rankPattern, Map<String, Double> alphaPattern) {

    public static final String ALL_LINEAR = "all-linear";

    /** Every linear layer name in Mistral and Mixtral; {@code gate} is the Mixtral router. */
    public static final Set<String> MODULE_NAMES = Set.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
            "down_proj", "w1", "w2", "w3", "gate", "lm_head");

    /** What all-linear means here: every linear but the lm_head and the router (the router only on request). */
    static final Set<String> ALL_LINEAR_NAMES = Set.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
            "down_proj", "w1", "w2", "w3");

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
        for (String target : targetModules) {
            String leaf = target.substring(target.lastIndexOf('.') + 1);
            if (!MODULE_NAMES.contains(leaf) && !(target.equals(ALL_LINEAR) && targetModules.size() == 1)) {
                throw new IllegalArgumentException("unknown lora target \"" + target + "\": expected " + ALL_LINEAR
                        + " alone, or some of " + new TreeSet<>(MODULE_NAMES));
            }
        }
        rankPattern = Map.copyOf(rankPattern == null ? Map.of() : rankPattern);
        alphaPattern = Map.copyOf(alphaPattern == null ? Map.of() : alphaPattern);
        rankPattern.forEach((key, rank) -> {
            if (rank <= 0) {
                throw new IllegalArgumentException("rank_pattern \"" + key + "\" must be a positive integer, got " + rank);
            }
        });
    }

    public static LoraConfig of(int r, double alpha, List<String> targetModules) {
        return new LoraConfig(r, alpha, 0.0, targetModules, false, Map.of(), Map.of());
    }

    /**
     * Whether a full module name such as model.layers.0.block_sparse_moe.experts.3.w1 gets an adapter: PEFT's rule,
     * the name equals a target or ends with "." + target.
     */
    public boolean targets(String moduleName) {
        if (targetModules.equals(List.of(ALL_LINEAR))) {
            return ALL_LINEAR_NAMES.contains(moduleName.substring(moduleName.lastIndexOf('.') + 1));
        }
        for (String target : targetModules) {
            if (moduleName.equals(target) || moduleName.endsWith("." + target)) {
                return true;
            }
        }
        return false;
    }

    public int rankOf(String moduleName) {
        Integer rank = patternValue(rankPattern, moduleName);
        return rank == null ? r : rank;
    }

    /** The rank_pattern key that sets {@code moduleName}'s rank, or null when it has the default rank r. */
    public String rankPatternKey(String moduleName) {
        for (String key : new LinkedHashMap<>(rankPattern).keySet()) {
            if (patternValue(Map.of(key, 0), moduleName) != null) {
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
        for (Map.Entry<String, T> entry : new LinkedHashMap<>(patterns).entrySet()) {
            if (Pattern.compile("(.*\\.)?(" + entry.getKey() + ")$").matcher(moduleName).matches()) {
                return entry.getValue();
            }
        }
        return null;
    }
}
