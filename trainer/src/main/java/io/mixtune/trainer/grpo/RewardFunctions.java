package io.mixtune.trainer.grpo;

import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.trainer.recipe.RecipeValueException;
import io.mixtune.trainer.reward.RewardScorer;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The reward functions a recipe names (grpo.reward_funcs): TRL 1.13's own trl/rewards functions that need no other
 * package, by TRL's name, translated (format_rewards.think_format_reward, other_rewards.get_soft_overlong_punishment,
 * other_rewards.get_repetition_penalty_reward), and reward models trained by `mixtune reward`, by folder.
 */
public final class RewardFunctions {
    private RewardFunctions() {}

    /** A reward function under the name its metrics take (rewards/NAME/mean), TRL's __name__ for the built-ins. */
    public record Named(String name, RewardFunction function) {}

    /** TRL's rewards that need math_verify (and latex2sympy2_extended), which mixtune does not have. */
    private static final Set<String> NEED_MATH_VERIFY = Set.of("accuracy_reward", "reasoning_accuracy_reward",
            "get_cosine_scaled_reward", "cosine_scaled_reward");
    private static final Pattern CALL = Pattern.compile("\\s*([A-Za-z_]+)\\s*(?:\\((.*)\\))?\\s*");
    // TRL's format_rewards.think_format_reward, matched from the start as re.match does
    private static final Pattern THINK = Pattern.compile("^<think>(?!.*<think>)(.*?)</think>.*$",
            Pattern.DOTALL | Pattern.MULTILINE);

    /**
     * A recipe's entry: a built-in (TRL's name, arguments as keywords) or a reward model folder; anything else is
     * refused naming the entry.
     *
     * @param scorer loads a reward model folder (the base is the policy's)
     */
    public static Named of(String entry, String key, Function<Path, RewardScorer> scorer) {
        Matcher call = CALL.matcher(entry);
        if (call.matches()) {
            String name = call.group(1);
            Map<String, String> args = arguments(call.group(2), key, entry);
            switch (name) {
                case "think_format_reward" -> {
                    noArguments(args, key, entry);
                    return new Named("think_format_reward", batch -> batch.completions().stream()
                            .map(text -> THINK.matcher(text).lookingAt() ? 1.0 : 0.0).toList());
                }
                case "get_soft_overlong_punishment", "soft_overlong_punishment_reward" -> {
                    int maxLength = integer(args, "max_completion_len", key, entry);
                    int cache = integer(args, "soft_punish_cache", key, entry);
                    return new Named("soft_overlong_punishment_reward", batch -> batch.completionIds().stream()
                            .map(ids -> softOverlong(ids.length, maxLength, cache)).toList());
                }
                case "get_repetition_penalty_reward", "repetition_penalty_reward" -> {
                    int ngram = args.containsKey("ngram_size") ? integer(args, "ngram_size", key, entry) : 3;
                    double penalty = args.containsKey("max_penalty") ? number(args, "max_penalty", key, entry) : -1.0;
                    if (penalty > 0) {
                        throw new RecipeValueException(key, entry + ": max_penalty must not be positive (TRL's check)");
                    }
                    return new Named("repetition_penalty_reward", batch -> batch.completionIds().stream()
                            .map(ids -> repetitionPenalty(ids, ngram, penalty)).toList());
                }
                default -> {
                    if (NEED_MATH_VERIFY.contains(name)) {
                        throw new RecipeValueException(key, name + " is not offered: TRL's needs the math_verify "
                                + "package (LaTeX answer checking); write it as a Java reward function "
                                + "(Training.rewardFunction) or drop it");
                    }
                }
            }
        }
        Path folder = Path.of(entry);
        if (Files.isDirectory(folder)) {
            if (!Files.isRegularFile(folder.resolve(PeftAdapter.CONFIG_FILE))) {
                throw new RecipeValueException(key, "\"" + entry + "\" is a folder without " + PeftAdapter.CONFIG_FILE
                        + ": name a reward model's adapter folder (output_dir/adapter of a train.method reward run)");
            }
            RewardScorer model;
            try {
                model = scorer.apply(folder);
            } catch (IllegalArgumentException | UncheckedIOException e) {
                throw new RecipeValueException(key, "\"" + entry + "\" is not a reward model of this base: "
                        + e.getMessage());
            }
            return new Named(folder.getFileName().toString(), batch -> {
                List<long[]> sequences = new ArrayList<>();
                for (int i = 0; i < batch.size(); i++) {
                    sequences.add(RewardScorer.concat(batch.promptIds().get(i), batch.completionIds().get(i)));
                }
                List<Double> scores = new ArrayList<>();
                for (float score : model.rewards(sequences, RewardScorer.DEFAULT_BATCH_SIZE)) {
                    scores.add((double) score);
                }
                return scores;
            });
        }
        throw new RecipeValueException(key, "\"" + entry + "\" is neither a built-in reward function "
                + "(think_format_reward, get_soft_overlong_punishment(max_completion_len=N, soft_punish_cache=M), "
                + "get_repetition_penalty_reward(ngram_size=3, max_penalty=-1.0)) nor a reward model folder "
                + "(mixtune reward's output_dir/adapter)");
    }

    /** TRL's _SoftOverlongPunishment (DAPO eq. 13) of a completion of {@code length} tokens. */
    static double softOverlong(int length, int maxLength, int cache) {
        if (length <= maxLength - cache) {
            return 0.0;
        }
        if (length <= maxLength) {
            return (double) (maxLength - cache - length) / cache;
        }
        return -1.0;
    }

    /** TRL's _RepetitionPenalty: (1 - distinct n-grams / n-grams) x max_penalty, 0 below n tokens. */
    static double repetitionPenalty(long[] ids, int ngram, double maxPenalty) {
        if (ids.length < ngram) {
            return 0.0;
        }
        Set<List<Long>> distinct = new HashSet<>();
        int count = ids.length - ngram + 1;
        for (int i = 0; i < count; i++) {
            List<Long> gram = new ArrayList<>();
            for (int k = 0; k < ngram; k++) {
                gram.add(ids[i + k]);
            }
            distinct.add(gram);
        }
        double scaling = 1 - (double) distinct.size() / count;
        return scaling != 0 ? scaling * maxPenalty : 0.0;
    }

    private static Map<String, String> arguments(String text, String key, String entry) {
        Map<String, String> args = new LinkedHashMap<>();
        if (text == null || text.isBlank()) {
            return args;
        }
        for (String part : text.split(",")) {
            String[] pair = part.split("=", 2);
            if (pair.length != 2) {
                throw new RecipeValueException(key, entry + ": arguments are keywords, name=value, got \"" + part.strip()
                        + "\"");
            }
            args.put(pair[0].strip(), pair[1].strip());
        }
        return args;
    }

    private static void noArguments(Map<String, String> args, String key, String entry) {
        if (!args.isEmpty()) {
            throw new RecipeValueException(key, entry + " takes no arguments");
        }
    }

    private static int integer(Map<String, String> args, String name, String key, String entry) {
        String value = args.get(name);
        try {
            return Integer.parseInt(value);
        } catch (NumberFormatException | NullPointerException e) {
            throw new RecipeValueException(key, entry + ": " + name + " must be an integer, got " + value);
        }
    }

    private static double number(Map<String, String> args, String name, String key, String entry) {
        String value = args.get(name);
        try {
            return Double.parseDouble(value);
        } catch (NumberFormatException e) {
            throw new RecipeValueException(key, entry + ": " + name + " must be a number, got " + value);
        }
    }
}
