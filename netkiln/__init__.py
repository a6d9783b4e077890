"""netkiln: train Keras deep neural networks as jobs over REST."""
