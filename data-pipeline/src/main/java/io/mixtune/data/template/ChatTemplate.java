package io.mixtune.data.template;

import io.mixtune.data.chat.Conversation;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.util.List;

/**
 * Turns a conversation into tokens, piece by piece: each message is tokenized on its own and the pieces concatenated,
 * so where the assistant's tokens begin and end is known exactly, never searched for in the token stream.
 */
public interface ChatTemplate {

    /** The name a recipe uses. */
    String name();

    List<Segment> segments(Conversation conversation, TextTokenizer tokenizer);

    /**
     * The template as a Hugging Face Jinja {@code chat_template} whose apply_chat_template gives these ids (and, with
     * its {@code {% generation %}} blocks, this mask), written into the tokenizer_config.json of what mixtune saves;
     * null where there is none.
     */
    default String jinja() {
        return null;
    }

    /** The built-in templates; a custom one is built from its strings ({@code DataConfig.chatTemplate}). */
    public static ChatTemplate byName(String name, long bosId, long eosId) {
        return switch (name) {
            case "mistral" -> new MistralTemplate(bosId, eosId);
            case "chatml" -> new ChatMlTemplate();
            case "custom" -> throw new IllegalArgumentException("a custom template needs its strings: build it with "
                    + "DataConfig.chatTemplate or new CustomTemplate");
            default -> throw new IllegalArgumentException("unknown chat template \"" + name + "\": expected mistral, "
                    + "chatml, or a custom template with per-role prefix and suffix");
        };
    }
}
