/**
 * Setup file of every test file: removes the directories `tempDir` made, after
 * the file's own afterAll hooks have stopped what used them.
 */
import { afterAll } from 'vitest';
import { removeTempDirs } from '../helpers/temp.ts';

afterAll(() => removeTempDirs());
