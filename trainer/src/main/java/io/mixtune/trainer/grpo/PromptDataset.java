package io.mixtune.trainer.grpo;

import com.fasterxml.jackson.databind.JsonNode;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.preference.PreferencePair;
import io.mixtune.data.read.JsonRecords;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * TRL's prompt-only dataset as GRPOTrainer reads it: records with a prompt, a string (raw text, tokenized with BOS as
 * TRL's processing_class(text=...) does) or a list of messages (through the chat template with the generation prompt,
 * TRL's apply_chat_template(add_generation_prompt=True)); every other field is kept for the reward functions.
 *
 * @param skipped records found invalid and skipped (data.skip_invalid), with their file:line
 */
public record PromptDataset(List<Prompt> prompts, List<InvalidRecordException> skipped) {

    /**
     * @param prompt the record's prompt as written
     * @param ids its tokens, as the model is prompted
     * @param columns the record's other fields, in file order
     */
    public record Prompt(JsonNode prompt, long[] ids, Map<String, JsonNode> columns, String source) {}

    /**
     * @param maxPromptLength a longer prompt is invalid (data.max_seq_len less room for one token of answer)
     * @param skipInvalid skip invalid records (counted) instead of stopping at the first
     */
    public static PromptDataset read(List<Path> files, HfChatTemplate template, TextTokenizer tokenizer,
            int maxPromptLength, boolean skipInvalid) {
        List<Prompt> prompts = new ArrayList<>();
        List<InvalidRecordException> skipped = new ArrayList<>();
        for (Path file : files) {
            new JsonRecords(file).read((line, record) -> {
                String source = file + ":" + line;
                try {
                    prompts.add(prompt(record, source, template, tokenizer, maxPromptLength));
                } catch (InvalidRecordException e) {
                    if (!skipInvalid) {
                        throw e;
                    }
                    skipped.add(e);
                }
            }, e -> {
                if (!skipInvalid) {
                    throw e;
                }
                skipped.add(e);
            });
        }
        return new PromptDataset(List.copyOf(prompts), List.copyOf(skipped));
    }

    private static Prompt prompt(JsonNode record, String source, HfChatTemplate template, TextTokenizer tokenizer,
            int maxPromptLength) {
        JsonNode prompt = record.get("prompt");
        if (prompt == null || !(prompt.isTextual() || prompt.isArray())) {
            throw new InvalidRecordException(source, "GRPO reads prompt-only records: {\"prompt\": a string or a list "
                    + "of messages, other fields for the reward functions}, got " + (prompt == null
                    ? "no prompt field" : "prompt " + prompt.getNodeType()));
        }
        long[] ids;
        if (prompt.isTextual()) {
            ids = tokenizer.encode(prompt.asText(), true);
        } else {
            List<Message> messages;
            try {
                messages = PreferencePair.messages(prompt, "prompt");
            } catch (IllegalArgumentException e) {
                throw new InvalidRecordException(source, e.getMessage());
            }
            ids = template.promptIds(messages, tokenizer);
        }
        if (ids.length == 0 || ids.length > maxPromptLength) {
            throw new InvalidRecordException(source, "prompt of " + ids.length + " tokens: it must hold 1 to "
                    + maxPromptLength + " (data.max_seq_len - 1)");
        }
        Map<String, JsonNode> columns = new LinkedHashMap<>();
        record.fields().forEachRemaining(field -> {
            if (!field.getKey().equals("prompt")) {
                columns.put(field.getKey(), field.getValue());
            }
        });
        return new Prompt(prompt, ids, columns, source);
    }

    public int size() {
        return prompts.size();
    }
}
