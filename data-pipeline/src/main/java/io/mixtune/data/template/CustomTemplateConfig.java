package io.mixtune.data.template;

/**
 * A template written in the recipe: each message becomes prefix + content + suffix of its role, a system message
 * whenever the conversation has one (even empty, as apply_chat_template renders it). Trained are the assistant's
 * content and suffix, then its EOS when {@code eosAfterAssistant}; {@code afterAssistant} follows untrained.
 * ChatML, for example: {@code user_prefix: "<|im_start|>user\n"}, {@code user_suffix: "<|im_end|>\n"} (system
 * alike), {@code assistant_prefix: "<|im_start|>assistant\n"}, {@code assistant_suffix: "<|im_end|>"},
 * {@code after_assistant: "\n"}. Strings left out are empty; bos and eos_after_assistant must be said.
 *
 * @param afterAssistant text after each assistant turn (and its EOS) that is not trained, such as ChatML's newline
 * @param bos start every sample with the tokenizer's BOS
 * @param eosAfterAssistant close every assistant turn with EOS (trained), as the mistral template does
 */
public record CustomTemplateConfig(String systemPrefix, String systemSuffix, String userPrefix, String userSuffix,
        String assistantPrefix, String assistantSuffix, String afterAssistant, boolean bos,
        boolean eosAfterAssistant) {

    public CustomTemplateConfig {
        systemPrefix = systemPrefix == null ? "" : systemPrefix;
        systemSuffix = systemSuffix == null ? "" : systemSuffix;
        userPrefix = userPrefix == null ? "" : userPrefix;
        userSuffix = userSuffix == null ? "" : userSuffix;
        assistantPrefix = assistantPrefix == null ? "" : assistantPrefix;
        assistantSuffix = assistantSuffix == null ? "" : assistantSuffix;
        afterAssistant = afterAssistant == null ? "" : afterAssistant;
    }
}
