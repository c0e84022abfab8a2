/**
 * Every level module, loaded for its registration, and the registry's lookups. Import the
 * registry's functions from here (not from registry.ts) so that no lookup can run before a
 * level has registered itself.
 */
import './striped.js';
import './raid456.js';

export { findLevel, type LevelDescriptor, levelByName, levelByNumber, type PersonalityArgs, type Redundancy, registeredLevels } from './registry.js';
