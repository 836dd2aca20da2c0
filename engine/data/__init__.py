"""A shop's data as the engine sees it: the data contract, loading and validation, id maps, the
interaction matrix, item attributes and one-hot feature spaces. Everything downstream works on dense
indices produced here, so ids are mapped once, at this edge."""
