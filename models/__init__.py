"""Job-spec schemas, SQL tables and the DB session. Never imports TensorFlow or Keras."""
