package io.mixtune.model.safetensors;

import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** The file names Hugging Face transformers gives a checkpoint's pieces, shared by the reader and the writer. */
final class CheckpointFileNames {
    static final String SINGLE_FILE = "model.safetensors";
    static final String INDEX_FILE = "model.safetensors.index.json";
    static final String SAFETENSORS_EXTENSION = ".safetensors";

    /** {@code model-00001-of-00003.safetensors}; transformers pads both numbers to five digits. */
    private static final Pattern SHARD = Pattern.compile("(.+)-(\\d+)-of-(\\d+)\\.safetensors");

    /** What a save into a directory replaces: exactly the names {@link SafetensorsWriter} writes. */
    private static final Pattern WRITTEN_BY_CHECKPOINT_SAVE =
            Pattern.compile("model(-\\d+-of-\\d+)?\\.safetensors|model\\.safetensors\\.index\\.json");

    /** mistral-inference's own files: {@code consolidated.safetensors}, or {@code consolidated.00.safetensors} etc. */
    private static final Pattern MISTRAL_NATIVE = Pattern.compile("consolidated(\\.\\d+)?\\.safetensors");

    /** torch.save / pickle formats, refused because unpickling runs arbitrary code. */
    private static final List<String> PICKLE_EXTENSIONS = List.of(".bin", ".pt", ".pth", ".ckpt");

    private CheckpointFileNames() {
    }

    static String shardFile(int shardNumber, int shardCount) {
        return String.format(Locale.ROOT, "model-%05d-of-%05d.safetensors", shardNumber, shardCount);
    }

    static boolean isSafetensors(Path file) {
        return fileName(file).endsWith(SAFETENSORS_EXTENSION);
    }

    static boolean isMistralNative(Path file) {
        return MISTRAL_NATIVE.matcher(fileName(file)).matches();
    }

    static String mistralNativeRefusal(List<Path> files) {
        return String.join(", ", files.stream().map(CheckpointFileNames::fileName).toList()) + " is Mistral's own format"
                + " (mistral-inference's tensor names and rotary layout, params.json), which mixtune does not read:"
                + " download the Hugging Face files of the same repository (config.json, " + INDEX_FILE + " and the"
                + " model-*.safetensors it names), or convert it with transformers'"
                + " src/transformers/models/mistral/convert_mistral_weights_to_hf.py";
    }

    static boolean isPickle(Path file) {
        String name = fileName(file).toLowerCase(Locale.ROOT);
        return PICKLE_EXTENSIONS.stream().anyMatch(name::endsWith);
    }

    static boolean isWrittenByCheckpointSave(Path file) {
        return WRITTEN_BY_CHECKPOINT_SAVE.matcher(fileName(file)).matches();
    }

    /** The (prefix, number, count) of a shard-numbered file name, or null for any other name. */
    static ShardName parseShardName(Path file) {
        Matcher m = SHARD.matcher(fileName(file));
        if (!m.matches()) {
            return null;
        }
        try {
            return new ShardName(m.group(1), Integer.parseInt(m.group(2)), Integer.parseInt(m.group(3)));
        } catch (NumberFormatException tooManyDigits) {
            return null;
        }
    }

    record ShardName(String prefix, int number, int count) {
    }

    static String pickleRefusal(String what) {
        return pickleRefusal(what, "transformers: AutoModelForCausalLM.from_pretrained(src).save_pretrained(dst, "
                + "safe_serialization=True)");
    }

    /** @param conversion how Python converts it to safetensors: the library and the call */
    static String pickleRefusal(String what, String conversion) {
        return "refusing to load " + what + ": PyTorch pickle checkpoints (.bin/.pt/.pth/.ckpt) can run arbitrary"
                + " code when loaded. Convert it to safetensors first, e.g. in Python with " + conversion;
    }

    private static String fileName(Path file) {
        Path name = file.getFileName();
        return name == null ? "" : name.toString();
    }
}
