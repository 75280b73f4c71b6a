package io.mixtune.trainer.recipe;

/**
 * A recipe value that reads well but that the run cannot use, found once the model or the data it names is looked at
 * (a data file with no usable sample, a preset too big to train): the message starts with the key, so that
 * {@link RecipeReader.Loaded#locate} can point at the line that set it.
 */
public final class RecipeValueException extends IllegalArgumentException {
    private final String key;
    private final String problem;

    /** @param key the dotted recipe key, such as data.files */
    public RecipeValueException(String key, String problem) {
        super(key + ": " + problem);
        this.key = key;
        this.problem = problem;
    }

    public String key() {
        return key;
    }

    public String problem() {
        return problem;
    }
}
