package io.mixtune.trainer.chat;

import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.Role;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.HfChatTemplate;
import io.mixtune.data.template.JinjaChatTemplate;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.model.tokenizer.TextTokenizer;
import io.mixtune.trainer.InvalidOptionException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A conversation with a model, prompted as it was trained: its chat template (an adapter's tokenizer_config.json,
 * which holds the template it was trained with, else the model's own, else mistral as {@code data.template: auto}
 * falls back) rendered with the generation prompt, as apply_chat_template(..., add_generation_prompt=True) does.
 */
public final class ModelChat {
    private final HfChatTemplate template;
    private final TextTokenizer tokenizer;
    private final List<Message> messages = new ArrayList<>();

    /** @param system a system prompt, or null */
    public ModelChat(HfChatTemplate template, TextTokenizer tokenizer, String system) {
        this.template = template;
        this.tokenizer = tokenizer;
        if (system != null) {
            messages.add(new Message(Role.SYSTEM, system));
        }
    }

    /**
     * The chat template for {@code tokenizer}'s model: the adapter's when {@code adapterDir} has one (its
     * chat_template.jinja, else its tokenizer_config.json's, as AutoTokenizer reads them), else the model's own, else
     * mistral's; refused where the model has named templates and no default one, as transformers refuses it.
     *
     * @param adapterDir an adapter folder, or null
     */
    public static HfChatTemplate template(TokenizerFile tokenizer, Path adapterDir) {
        JinjaChatTemplate jinja = null;
        if (adapterDir != null) {
            // an adapter folder whose tokenizer transformers 5 saved holds its template in chat_template.jinja
            Path config = adapterDir.resolve("tokenizer_config.json");
            Path template = adapterDir.resolve(JinjaChatTemplate.TEMPLATE_FILE);
            try {
                jinja = JinjaChatTemplate.fromTokenizerFiles(config.toString(),
                        Files.isRegularFile(config) ? Files.readAllBytes(config) : null, template.toString(),
                        Files.isRegularFile(template) ? Files.readString(template) : null);
            } catch (IOException e) {
                throw new UncheckedIOException(config + " or " + template + ": cannot be read: " + e.getMessage(), e);
            }
        }
        if (jinja == null) {
            String noDefault = tokenizer.noDefaultTemplate();
            if (noDefault != null) {
                // as training with data.template auto or hf refuses it (DataConfig#chatTemplate)
                throw new InvalidOptionException("model", "--model: " + noDefault + ": a chat needs the model's "
                        + "chat_template.jinja, or --adapter of a run trained with data.template hf:NAME (the adapter "
                        + "carries the template it was trained with)");
            }
            jinja = tokenizer.chatTemplate();
        }
        if (jinja == null) {
            jinja = new JinjaChatTemplate("mistral", MistralTemplate.JINJA, "<s>", "</s>");
        }
        return new HfChatTemplate(jinja, tokenizer.bosId(), tokenizer.eosId());
    }

    public HfChatTemplate template() {
        return template;
    }

    /** The prompt ids for the user's next message: the conversation so far, the message, the generation prompt. */
    public long[] ask(String userText) {
        messages.add(new Message(Role.USER, userText));
        return template.promptIds(messages, tokenizer);
    }

    /** The model's answer to the last question, from its new ids; the conversation keeps it. */
    public String answer(long[] newIds) {
        String text = tokenizer.decode(newIds).strip();
        messages.add(new Message(Role.ASSISTANT, text));
        return text;
    }
}
