package io.mixtune.trainer;

/**
 * A value given to one of the Java entry points ({@link ModelEval}, {@link Merging}, {@link MergeAdapter},
 * {@link Generation}, whose {@link Generation.InvalidOptions} names its Options component instead) that they
 * cannot use: a missing directory, a file where a directory belongs, a length past the model's positions. The message
 * names the option as the command line spells it ({@code --model DIR: no such directory ...}), so the CLI prints it as
 * it is and exits with 2; {@link #option} is that name without the dashes (null when the problem is no one option's,
 * such as a merge config that contradicts itself).
 */
public class InvalidOptionException extends RuntimeException {
    private final String option;

    public InvalidOptionException(String option, String message) {
        super(message);
        this.option = option;
    }

    public InvalidOptionException(String option, String message, Throwable cause) {
        super(message, cause);
        this.option = option;
    }

    /** The option at fault as the command line names it without its dashes ("model", "max-seq-len"), or null. */
    public String option() {
        return option;
    }
}
