package io.mixtune.data.preference;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.io.InputStream;

/**
 * What the preference goldens' tests share: the bundled Mistral v1 tokenizer the goldens were made with (BOS 1,
 * EOS 2) and one golden file of golden/preference/ (written by interop/make_preference_goldens.py,
 * make_orpo_goldens.py or make_kto_goldens.py), opened once per test class.
 */
final class PreferenceGoldens implements AutoCloseable {
    static final long BOS = 1;
    static final long EOS = 2;
    /** A max_seq_len no golden pair reaches: the pair whole. */
    static final int UNLIMITED = 1 << 20;

    final TextTokenizer tokenizer;
    final JsonNode golden;

    private PreferenceGoldens(TextTokenizer tokenizer, JsonNode golden) {
        this.tokenizer = tokenizer;
        this.golden = golden;
    }

    /** @param file a file of golden/preference/, e.g. trl-tokenized.json */
    static PreferenceGoldens open(String file) throws IOException {
        JsonNode golden;
        try (InputStream in = PreferenceGoldens.class.getClassLoader()
                .getResourceAsStream("golden/preference/" + file)) {
            golden = new ObjectMapper().readTree(in);
        }
        return new PreferenceGoldens(TextTokenizer.openResource(ModelPreset.MISTRAL_V1_TOKENIZER, BOS, EOS), golden);
    }

    /** A JSON array of token ids. */
    static long[] longs(JsonNode array) {
        long[] values = new long[array.size()];
        for (int i = 0; i < values.length; i++) {
            values[i] = array.get(i).asLong();
        }
        return values;
    }

    @Override
    public void close() {
        tokenizer.close();
    }
}
