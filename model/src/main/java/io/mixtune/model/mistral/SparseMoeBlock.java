package io.mixtune.model.mistral;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDArrays;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import io.mixtune.model.nn.Casts;
import io.mixtune.model.nn.Linear;
import java.util.Arrays;
import java.util.List;

/**
 * Mixtral's sparse mixture of experts (Jiang et al. 2024, section 2.1): a router scores every expert per token, the
 * top k are kept and their softmax weights renormalised over the k, and each chosen expert runs only on its own tokens.
 */
public final class SparseMoeBlock {
    private final int topK;
    private Linear router;
    private final List<SwiGluMlp> experts;

    public SparseMoeBlock(Linear router, List<SwiGluMlp> experts, int topK) {
        this.router = router;
        this.experts = List.copyOf(experts);
        this.topK = topK;
    }

    /** The block's output and its router logits [B*T, experts] (kept for the load-balancing loss). */
    public record Output(NDArray hidden, NDArray routerLogits) {}

    /** x [B, T, hidden]. */
    public Output forward(NDArray x) {
        long hiddenSize = x.getShape().get(2);
        NDArray tokens = x.reshape(-1, hiddenSize);
        long tokenCount = tokens.getShape().get(0);
        NDArray routerLogits = router.forward(tokens);
        // Routing in float32 as transformers does, so the top-k choice matches it whatever the compute dtype.
        NDArray routingProbabilities = Casts.to(routerLogits, DataType.FLOAT32).softmax(-1);
        NDList top = routingProbabilities.topK(topK, -1, true, true);
        NDArray topWeights = top.get(0);
        topWeights = Casts.to(topWeights.div(topWeights.sum(new int[] {-1}, true)), x.getDataType());
        NDArray chosenExperts = top.get(1).reshape(-1);

        // Dispatch that autograd can follow: sort the (token, choice) pairs by expert, gather their inputs, run each
        // expert on its contiguous slice, and undo the sort with the inverse permutation. The sort is a counting sort
        // in Java: the expert ids come to Java anyway to cut the slices.
        long[] expertOfPair = chosenExperts.toLongArray();
        int[] slice = new int[experts.size() + 1];
        for (long expert : expertOfPair) {
            slice[(int) expert + 1]++;
        }
        for (int e = 0; e < experts.size(); e++) {
            slice[e + 1] += slice[e];
        }
        long[] tokenOfSortedPair = new long[expertOfPair.length];
        long[] sortedPlaceOfPair = new long[expertOfPair.length];
        int[] next = slice.clone();
        for (int pair = 0; pair < expertOfPair.length; pair++) {
            int place = next[(int) expertOfPair[pair]]++;
            tokenOfSortedPair[place] = pair / topK;
            sortedPlaceOfPair[pair] = place;
        }
        NDArray expertInputs = tokens.get(new NDIndex("{}", tokens.getManager().create(tokenOfSortedPair)));
        // One split rather than a slice per expert: a slice's backward fills a zero array of all the pairs and copies
        // its part in, a split's concatenates the parts (the same values; 32 fills of [pairs, hidden] fewer per step
        // on a 4-layer Mixtral).
        NDList expertSlices = expertInputs.split(Arrays.stream(slice, 1, experts.size()).asLongStream().toArray(), 0);
        NDList outputs = new NDList();
        for (int e = 0; e < experts.size(); e++) {
            if (slice[e + 1] > slice[e]) {
                outputs.add(experts.get(e).forward(expertSlices.get(e)));
            }
        }
        NDArray expertOutputs = NDArrays.concat(outputs, 0)
                .get(new NDIndex("{}", tokens.getManager().create(sortedPlaceOfPair)));
        NDArray combined = expertOutputs.reshape(tokenCount, topK, hiddenSize)
                .mul(topWeights.expandDims(-1))
                .sum(new int[] {1});
        return new Output(combined.reshape(x.getShape()), routerLogits);
    }

    void replaceLinears(String prefix, Linear.Replacer replacer) {
        router = replacer.replace(prefix + ".gate", router);
        for (int j = 0; j < experts.size(); j++) {
            experts.get(j).replaceLinears(prefix + ".experts." + j, replacer);
        }
    }
}
