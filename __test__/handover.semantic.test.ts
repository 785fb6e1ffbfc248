// Semantic rewrites of a two-VM KHO handover that keep the tree well-formed and often consistent:
// swapped values, segments, inodes, offsets, lengths, permissions, node names, domain and DID
// fields, a relabelled context, dropped nodes, and two or three of these at once
// (ts/fuzz/handover.ts). See handover.adversarial.test.ts for the rule and the named attacks.
import { describe } from 'vitest';
import { handoverCampaign } from './handover-helpers.js';

describe('semantic rewrites of the tree', () => {
  handoverCampaign('semantic', 20261208);
});
