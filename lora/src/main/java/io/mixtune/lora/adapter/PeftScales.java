package io.mixtune.lora.adapter;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The lora_alpha, use_rslora, rank_pattern and alpha_pattern that mixtune writes, so that PEFT 0.21 gives every module
 * the rank and scale mixtune gives it, on transformers 4 (per-expert Mixtral modules, as mixtune names them) and on
 * transformers 5, where PEFT fuses each layer's experts (w1 and w3 into one gate_up_proj of rank 2r and alpha 2 alpha,
 * w2 into down_proj) and looks the patterns up under those fused names.
 *
 * <p>Two things in PEFT's fusing need care (peft/utils/transformers_weight_conversion.py). rsLoRA: its gate_up_proj
 * gets 2 alpha / sqrt(2r), not alpha / sqrt(r), so a Mixtral rsLoRA adapter is written as plain LoRA with every alpha
 * times sqrt(its rank), which every reader divides by the rank. Patterns: it appends its own {@code .*\.gate_up_proj}
 * entries (2r, 2 alpha) after the file's and ignores patterns on w1/w2/w3 ("TODO: if there is already a rank or alpha
 * pattern..."), so where a pattern sets an expert's rank or alpha, the fused names' ranks and alphas are written
 * first, which PEFT's first-match lookup (get_pattern_key) then takes.
 */
final class PeftScales {
    private static final Pattern EXPERT =
            Pattern.compile("model\\.layers\\.(\\d+)\\.block_sparse_moe\\.experts\\.(\\d+)\\.(w1|w2|w3)");

    private PeftScales() {}

    /** What goes into adapter_config.json for r, lora_alpha, use_rslora and the two patterns. */
    record Written(double alpha, boolean useRslora, Map<String, Integer> rankPattern, Map<String, Double> alphaPattern) {}

    /** @param modules the full names of the modules that hold the adapter */
    static Written of(LoraConfig config, Collection<String> modules) {
        List<String> experts = modules.stream().filter(m -> EXPERT.matcher(m).matches()).toList();
        boolean foldRslora = config.useRslora() && !experts.isEmpty();
        double alpha = foldRslora ? config.alpha() * Math.sqrt(config.r()) : config.alpha();
        Map<String, Integer> ranks = new LinkedHashMap<>(config.rankPattern());
        Map<String, Double> alphas = foldRslora ? foldedAlphas(config, modules) : new LinkedHashMap<>(config.alphaPattern());
        LoraConfig written = new LoraConfig(config.r(), alpha, 0, config.targetModules(), config.useRslora() && !foldRslora,
                ranks, alphas, config.selection());
        // Where a module's alpha key and rank key differ, no one alpha per key fits: its own name fixes it.
        Map<String, Double> exact = new LinkedHashMap<>();
        for (String module : modules) {
            double scale = config.scaleOf(module);
            if (Math.abs(written.scaleOf(module) - scale) > 1e-12 * scale) {
                exact.put(escape(module), config.alphaOf(module) * Math.sqrt(config.rankOf(module)));
            }
        }
        alphas = first(exact, alphas);
        written = new LoraConfig(written.r(), alpha, 0, written.targetModules(), written.useRslora(), ranks, alphas,
                written.selection());
        if (!experts.isEmpty() && patternsReachExperts(written, experts)) {
            Map<String, Integer> fusedRanks = new LinkedHashMap<>();
            Map<String, Double> fusedAlphas = new LinkedHashMap<>();
            fusedPatterns(written, experts, fusedRanks, fusedAlphas);
            ranks = first(fusedRanks, ranks);
            alphas = first(fusedAlphas, alphas);
        }
        return new Written(alpha, written.useRslora(), ranks, alphas);
    }

    /**
     * rsLoRA as plain LoRA: each alpha key's alpha times sqrt of the rank of the modules it sets, then an alpha for each
     * rank key (the global alpha times sqrt of that rank) for the modules no alpha key covers.
     */
    private static Map<String, Double> foldedAlphas(LoraConfig config, Collection<String> modules) {
        Map<String, Double> alphas = new LinkedHashMap<>();
        config.alphaPattern().forEach((key, value) -> {
            int rank = modules.stream().filter(m -> firstKey(config.alphaPattern(), m).equals(key)).findFirst()
                    .map(config::rankOf).orElse(config.r());
            alphas.put(key, value * Math.sqrt(rank));
        });
        config.rankPattern().forEach((key, rank) -> alphas.putIfAbsent(key, config.alpha() * Math.sqrt(rank)));
        return alphas;
    }

    private static String firstKey(Map<String, ?> patterns, String module) {
        return patterns.keySet().stream().filter(k -> LoraConfig.patternMatches(k, module)).findFirst().orElse("");
    }

    private static boolean patternsReachExperts(LoraConfig written, List<String> experts) {
        for (String key : concat(written.rankPattern(), written.alphaPattern())) {
            for (String expert : experts) {
                Matcher m = EXPERT.matcher(expert);
                m.matches();
                String fused = "model.layers." + m.group(1) + ".mlp.experts." + fusedName(m.group(3));
                if (LoraConfig.patternMatches(key, expert) || LoraConfig.patternMatches(key, fused)) {
                    return true;
                }
            }
        }
        return false;
    }

    private static List<String> concat(Map<String, ?> a, Map<String, ?> b) {
        return Stream.concat(a.keySet().stream(), b.keySet().stream()).toList();
    }

    private static String fusedName(String expertModule) {
        return expertModule.equals("w2") ? "down_proj" : "gate_up_proj";
    }

    /**
     * Per layer: gate_up_proj at twice w1's rank and alpha (PEFT concatenates w1's and w3's factors), down_proj at w2's;
     * one key for all layers where they agree. Refused where PEFT's fused tensors cannot hold what mixtune computes.
     */
    private static void fusedPatterns(LoraConfig written, List<String> experts, Map<String, Integer> ranks,
            Map<String, Double> alphas) {
        // layer -> fused name -> (rank, alpha) and the module it came from
        Map<Integer, Map<String, double[]>> perLayer = new TreeMap<>();
        Map<Integer, Map<String, String>> source = new TreeMap<>();
        for (String expert : experts) {
            Matcher m = EXPERT.matcher(expert);
            m.matches();
            int layer = Integer.parseInt(m.group(1));
            String fused = fusedName(m.group(3));
            int factor = fused.equals("gate_up_proj") ? 2 : 1;
            double[] value = {factor * written.rankOf(expert), factor * written.alphaOf(expert)};
            double[] known = perLayer.computeIfAbsent(layer, l -> new TreeMap<>()).putIfAbsent(fused, value);
            String knownModule = source.computeIfAbsent(layer, l -> new TreeMap<>()).putIfAbsent(fused, expert);
            if (known != null && (known[0] != value[0] || known[1] != value[1])) {
                throw new IllegalArgumentException("rank_pattern/alpha_pattern give " + knownModule + " rank "
                        + (int) known[0] / factor + " and alpha " + known[1] / factor + " but " + expert + " rank "
                        + (int) value[0] / factor + " and alpha " + value[1] / factor + ": PEFT 0.21 on transformers 5 "
                        + "fuses a Mixtral layer's experts into one gate_up_proj (every w1 and w3) and one down_proj "
                        + "(every w2), each with one rank and alpha, so it cannot load this adapter; give all experts "
                        + "of a layer, and w1 and w3, the same rank and alpha");
            }
        }
        for (String fused : List.of("gate_up_proj", "down_proj")) {
            Map<Integer, double[]> layers = new TreeMap<>();
            perLayer.forEach((layer, values) -> {
                if (values.containsKey(fused)) {
                    layers.put(layer, values.get(fused));
                }
            });
            boolean uniform = layers.values().stream().map(v -> v[0] + "/" + v[1]).distinct().count() <= 1;
            layers.forEach((layer, value) -> {
                String key = (uniform ? "" : "model\\.layers\\." + layer + "\\.") + "mlp\\.experts\\." + fused;
                ranks.put(key, (int) value[0]);
                alphas.put(key, value[1]);
            });
        }
    }

    /** PEFT matches pattern keys as regexes against the end of the module name: a module name with its dots escaped. */
    static String escape(String module) {
        return module.replace(".", "\\.");
    }

    private static <T> Map<String, T> first(Map<String, T> front, Map<String, T> rest) {
        Map<String, T> joined = new LinkedHashMap<>(front);
        rest.forEach(joined::putIfAbsent);
        return joined;
    }
}
