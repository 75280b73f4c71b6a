package io.mixtune.trainer.reward;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataReport;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.ChatTemplate;
import io.mixtune.data.template.LossPolicy;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.nio.file.Path;
import java.util.List;

/**
 * Chats as the token sequences a reward model scores, tokenized as training tokenizes them: the template (mistral or
 * chatml), every assistant turn, the trailing exchanges dropped past max_seq_len. `mixtune reward` scores a chat file
 * through it and `generate --best-of` each prompt and answer, so a best-of-n score is the one `mixtune reward` gives
 * that chat.
 */
public final class RewardSequences implements AutoCloseable {
    public static final String DEFAULT_TEMPLATE = "mistral";
    public static final List<String> TEMPLATES = List.of("mistral", "chatml");

    private final TextTokenizer text;
    private final SampleBuilder builder;

    /** @param template mistral or chatml, as the reward model's training recipe had it */
    public RewardSequences(TokenizerFile tokenizer, String template, int maxSeqLen) {
        if (!TEMPLATES.contains(template)) {
            throw new IllegalArgumentException("template: expected mistral or chatml, got '" + template + "'");
        }
        this.text = tokenizer.open();
        this.builder = new SampleBuilder(ChatTemplate.byName(template, tokenizer.bosId(), tokenizer.eosId()), text,
                maxSeqLen, LossPolicy.ALL_ASSISTANT_TURNS);
    }

    /** The longest sequence `mixtune reward` scores by default: 2048 tokens, or the model's positions if fewer. */
    public static int defaultMaxSeqLen(ModelConfig config) {
        return Math.min(2048, config.maxPositionEmbeddings());
    }

    /**
     * Every chat of a file (any chat format mixtune trains on, detected), in file order; a chat whose first prompt
     * fills max_seq_len is counted and skipped, as in training.
     *
     * @param skipInvalid skip and count records that are no chat instead of stopping at the first with its file:line
     */
    public ChatDataset chats(Path file, boolean skipInvalid) {
        DataReport report = new DataReport();
        List<TokenizedSample> samples = ChatDataset.read(List.of(file), null, builder, skipInvalid, report);
        return new ChatDataset(samples, List.of(), report);
    }

    /**
     * One chat's ids.
     *
     * @throws io.mixtune.data.chat.InvalidRecordException when its first prompt alone fills max_seq_len
     */
    public long[] chat(Conversation conversation) {
        return builder.build(conversation).sample().inputIds();
    }

    @Override
    public void close() {
        text.close();
    }
}
