"""tunewise: fine-tune language models the way best practice says it should be done."""

__version__ = "0.1.0"

import warnings as _warnings

# peft 0.21 reads model.is_gradient_checkpointing in every PeftModel it builds; transformers 5.24 renamed it
# (is_activation_checkpointing) and warns each time: nothing a tunewise user can act on
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
