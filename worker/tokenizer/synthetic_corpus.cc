// Training text of the synthetic tokenizer: a few paragraphs written for this project
// (free to use), with the usual mix of prose, numbers, punctuation, contractions,
// line breaks and a little non-ASCII text.
#include "worker/tokenizer/synthetic_tokenizer.h"

namespace cpserve::tokenizer {

absl::string_view SyntheticTrainingText() {
  static constexpr absl::string_view kText =
      R"(The river ran slowly past the old mill, and the miller's daughter sat on the bank counting the boats that went by. There were seven in the morning and twelve in the afternoon; she wrote each one down in a small blue notebook, with the time, the colour of its sail and the name painted on its bow.

"Why do you count them?" asked her brother, who thought the whole thing was a waste of a summer day. She didn't answer at once. "Because one day," she said at last, "I'll want to know how many there were, and nobody else will have written it down."

In 1887 the mill burned, and the notebook was the only record left of the traffic on the river that year. Historians later found that 3,412 boats had passed the mill between April and October, carrying grain, timber, wool and coal. The numbers were careful and complete: not a single day was missing, and the totals at the bottom of every page were correct.

A good system is like that notebook. It keeps working when nobody is watching; it writes down what happened, so that when something goes wrong you can find out why. Servers that answer requests, models that predict the next word, and networks that carry data from one machine to another all depend on small, patient records of this kind.

Here is a short list of things worth remembering:
  1. Measure before you change anything.
  2. Keep the simplest version that works.
  3. Write tests that would fail if the code were wrong.

We're told that the café by the bridge still serves the same soup it did a hundred years ago, and that the naïve tourists who ask for the recipe are always given a different one. It's probably not true, but it's a good story, and good stories last longer than mills.

The end of the day came quietly. The boats tied up at the harbour, the lamps were lit one by one, and the river kept running toward the sea, as it always had and as it always would.
)";
  return kText;
}

}  // namespace cpserve::tokenizer
