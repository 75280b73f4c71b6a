package io.mixtune.trainer.recipe;

/** A recipe that cannot be used; the message names the file and line, the key, and what was expected. */
public final class RecipeException extends RuntimeException {
    public RecipeException(String message) {
        super(message);
    }
}
