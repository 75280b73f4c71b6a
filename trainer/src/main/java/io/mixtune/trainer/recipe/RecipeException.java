package io.mixtune.trainer.recipe;

import java.util.List;

/**
 * A recipe that cannot be used: one line per problem, each naming the file and line, the key, and what was expected.
 * The reader reports every problem it finds at once, so a user fixes a recipe in one pass.
 */
public final class RecipeException extends RuntimeException {
    private final List<String> problems;

    public RecipeException(String problem) {
        this(List.of(problem));
    }

    public RecipeException(List<String> problems) {
        super(String.join("; ", problems));
        if (problems.isEmpty()) {
            throw new IllegalArgumentException("a RecipeException names at least one problem");
        }
        this.problems = List.copyOf(problems);
    }

    /** Each problem, one line each, in the order of the recipe's sections. */
    public List<String> problems() {
        return problems;
    }
}
