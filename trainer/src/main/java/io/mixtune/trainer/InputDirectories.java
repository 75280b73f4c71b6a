package io.mixtune.trainer;

import io.mixtune.lora.adapter.PeftAdapter;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What is wrong with a directory given as a model or an adapter, checked before anything loads and said alike by every
 * entry point: a file where a directory belongs, no directory, or a directory without the file that makes it a
 * Hugging Face checkpoint (config.json) or a PEFT adapter (adapter_config.json). Each caller wraps the clause in its
 * own input error (InvalidOptionException, Generation.InvalidOptions, UsageException), so the command exits with 2.
 */
public final class InputDirectories {
    private InputDirectories() {}

    /** Why {@code dir} is not a Hugging Face checkpoint directory, as a clause; null when it is one. */
    public static String modelProblem(Path dir) {
        return problem(dir, "config.json", "Hugging Face checkpoint", "(config.json + safetensors)");
    }

    /** Why {@code dir} is not a PEFT adapter directory, as a clause; null when it is one. */
    public static String adapterProblem(Path dir) {
        return problem(dir, PeftAdapter.CONFIG_FILE, "PEFT adapter",
                "(" + PeftAdapter.CONFIG_FILE + " + adapter_model.safetensors)");
    }

    /** {@code --option dir: problem} when {@code dir} is not a model directory. */
    public static void requireModel(String option, Path dir) {
        String problem = modelProblem(dir);
        if (problem != null) {
            throw new InvalidOptionException(option, "--" + option + " " + dir + ": " + problem);
        }
    }

    /** {@code --option dir: problem} when {@code dir} is not an adapter directory. */
    public static void requireAdapter(String option, Path dir) {
        String problem = adapterProblem(dir);
        if (problem != null) {
            throw new InvalidOptionException(option, "--" + option + " " + dir + ": " + problem);
        }
    }

    /** @param what the kind of directory, a noun ("PEFT adapter") */
    private static String problem(Path dir, String marker, String what, String contents) {
        if (Files.isRegularFile(dir)) {
            return "is a file, expected a " + what + " directory " + contents;
        }
        if (!Files.isDirectory(dir)) {
            return "no such directory (expected a " + what + ")";
        }
        if (!Files.isRegularFile(dir.resolve(marker))) {
            return "no " + what + " there (" + marker + " missing)";
        }
        return null;
    }
}
