// The real kernel as the judge: the sequence format, the simulator's executor, comparison.
export * from './sequence.js';
export * from './simulator.js';
export * from './compare.js';
export { uapiLayoutsHeader } from './layouts.js';
export * from './generate.js';
export * from './golden.js';
export * from './shrink.js';
