package io.mixtune.merging;

import io.mixtune.lora.adapter.AdapterMerge;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

/**
 * The files a merged model carries besides its weights: config, generation config and tokenizer, copied from the
 * base (or first) input. The tokenizer must be the inputs' common one: models with different vocabularies have
 * embedding rows that do not correspond, and averaging them is silently meaningless.
 */
final class CompanionFiles {
    /** The files that define the vocabulary; compared byte for byte wherever two inputs both have them. */
    static final List<String> VOCABULARY_FILES = List.of("tokenizer.json", "tokenizer.model");

    /** The companion files that describe the model rather than its tokenizer. */
    private static final List<String> MODEL_FILES = List.of("config.json", "generation_config.json");

    private CompanionFiles() {}

    static void requireSameTokenizer(List<Path> inputs) {
        for (String file : VOCABULARY_FILES) {
            Path first = null;
            byte[] reference = null;
            for (Path input : inputs) {
                Path candidate = input.resolve(file);
                if (!Files.isRegularFile(candidate)) {
                    continue;
                }
                byte[] bytes = read(candidate);
                if (reference == null) {
                    first = candidate;
                    reference = bytes;
                } else if (!Arrays.equals(reference, bytes)) {
                    throw new IllegalArgumentException(candidate + " differs from " + first + ": the inputs have"
                            + " different tokenizers, so their embedding rows do not mean the same tokens; merge only"
                            + " models that share one tokenizer");
                }
            }
        }
    }

    /** Copies each companion file from the first input that has it. */
    static void copy(List<Path> inputsInPriority, Path out) {
        copy(inputsInPriority, out, null);
    }

    /**
     * Copies each companion file from the first input that has it, the tokenizer's files first from
     * {@code tokenizerSource} (mergekit's tokenizer_source), when given.
     */
    static void copy(List<Path> inputsInPriority, Path out, Path tokenizerSource) {
        for (String file : AdapterMerge.COPIED_FILES) {
            List<Path> sources = inputsInPriority;
            if (tokenizerSource != null && !MODEL_FILES.contains(file)) {
                sources = new java.util.ArrayList<>(inputsInPriority);
                sources.add(0, tokenizerSource);
            }
            for (Path input : sources) {
                if (Files.isRegularFile(input.resolve(file))) {
                    try {
                        Files.copy(input.resolve(file), out.resolve(file));
                    } catch (IOException e) {
                        throw new UncheckedIOException("cannot copy " + input.resolve(file) + " to " + out + ": "
                                + e.getMessage(), e);
                    }
                    break;
                }
            }
        }
    }

    /**
     * The tokenizer files of the first adapter that carries them (tokenizer.json and tokenizer_config.json with the
     * chat template it was trained with, as mixtune's training writes them beside an adapter), both from that one, so
     * that a merged adapter tokenizes and renders chats as its first member did.
     */
    static void copyAdapterTokenizer(List<Path> adaptersInPriority, Path out) {
        for (Path adapter : adaptersInPriority) {
            List<String> carried = AdapterMerge.ADAPTER_TOKENIZER_FILES.stream()
                    .filter(file -> Files.isRegularFile(adapter.resolve(file))).toList();
            if (carried.isEmpty()) {
                continue;
            }
            for (String file : carried) {
                try {
                    Files.copy(adapter.resolve(file), out.resolve(file));
                } catch (IOException e) {
                    throw new UncheckedIOException("cannot copy " + adapter.resolve(file) + " to " + out + ": "
                            + e.getMessage(), e);
                }
            }
            return;
        }
    }

    static byte[] read(Path file) {
        try {
            return Files.readAllBytes(file);
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
    }
}
