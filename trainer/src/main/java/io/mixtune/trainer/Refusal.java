package io.mixtune.trainer;

/**
 * mixtune will not do what was asked because it would lose or mix someone's data: overwrite a run, write into a
 * directory another run holds, resume a run with a different recipe, reuse a base model written for another preset.
 * The message says why and what to do instead; the command exits with 2, as for any other input error.
 */
public final class Refusal extends RuntimeException {
    public Refusal(String message) {
        super(message);
    }
}
