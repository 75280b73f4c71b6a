package io.mixtune.model.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * config.json read as transformers 5.18's MistralConfig/MixtralConfig reads it, on the golden
 * interop/make_config_goldens.py writes: the Hub's Mistral-7B v0.1, v0.2, v0.3, Mixtral-8x7B-Instruct and
 * Mistral-Nemo files, one written by transformers 5, and files that leave keys to their defaults.
 */
class ModelConfigHfParityTest {
    static Stream<Arguments> cases() throws IOException {
        try (InputStream in = ModelConfigHfParityTest.class.getResourceAsStream("/golden/configs/resolved.json")) {
            List<Arguments> cases = new ArrayList<>();
            new ObjectMapper().readTree(in).forEach(c -> cases.add(Arguments.of(c.get("name").asText(), c)));
            return cases.stream();
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void readsConfigJsonAsTransformersDoes(String name, JsonNode testCase) {
        ModelConfig config = ModelConfig.fromJson(testCase.get("config"));
        JsonNode hf = testCase.get("transformers");
        assertEquals(hf.get("model_type").asText(), config.modelType().hfName());
        assertEquals(hf.get("hidden_size").intValue(), config.hiddenSize(), "hidden_size");
        assertEquals(hf.get("intermediate_size").intValue(), config.intermediateSize(), "intermediate_size");
        assertEquals(hf.get("num_hidden_layers").intValue(), config.numHiddenLayers(), "num_hidden_layers");
        assertEquals(hf.get("num_attention_heads").intValue(), config.numAttentionHeads(), "num_attention_heads");
        assertEquals(hf.get("num_key_value_heads").intValue(), config.numKeyValueHeads(), "num_key_value_heads");
        assertEquals(hf.get("head_dim").intValue(), config.headDim(), "head_dim");
        assertEquals(hf.get("vocab_size").intValue(), config.vocabSize(), "vocab_size");
        assertEquals(hf.get("rms_norm_eps").doubleValue(), config.rmsNormEps(), "rms_norm_eps");
        assertEquals(hf.get("rope_theta").doubleValue(), config.ropeTheta(), "rope_theta");
        if (hf.get("sliding_window").isNull()) {
            assertNull(config.slidingWindow(), "sliding_window");
        } else {
            assertEquals(hf.get("sliding_window").intValue(), config.slidingWindow(), "sliding_window");
        }
        assertEquals(hf.get("max_position_embeddings").intValue(), config.maxPositionEmbeddings(),
                "max_position_embeddings");
        assertEquals(hf.get("tie_word_embeddings").booleanValue(), config.tieWordEmbeddings(), "tie_word_embeddings");
        assertEquals(hf.get("num_local_experts").intValue(), config.numLocalExperts(), "num_local_experts");
        assertEquals(hf.get("num_experts_per_tok").intValue(), config.numExpertsPerTok(), "num_experts_per_tok");
        assertEquals(hf.get("router_aux_loss_coef").doubleValue(), config.routerAuxLossCoef(), "router_aux_loss_coef");
        assertEquals(hf.get("bos_token_id").intValue(), config.bosTokenId(), "bos_token_id");
        JsonNode eos = hf.get("eos_token_id");
        // A list of EOS ids: the first is the one mixtune appends and pads with (generation_config.json's list stops).
        assertEquals((eos.isArray() ? eos.get(0) : eos).intValue(), config.eosTokenId(), "eos_token_id");
    }
}
